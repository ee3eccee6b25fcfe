"""Operator prompts (P11): the Korean defaults as named Jinja2 templates, operator files
that replace them, and the checks that refuse a bad file at start-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from answer_fixtures import answer_engine, close_answer_engine, scripted_server, sse
from conftest import SampleCorpus
from hanrag.answer.engine import AskOptions
from hanrag.answer.prompts import (
    PROMPTS,
    PromptSet,
    answer_messages,
    default_prompts,
    image_description_prompt,
    judge_messages,
    judge_score,
    load_prompts,
    planner_messages,
    table_answer_messages,
    table_sql_messages,
)
from hanrag.api.app import create_app
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.domain import Chunk, Hit
from hanrag.engine import Engine
from hanrag.errors import ConfigError
from hanrag.llm.base import Source, Turn
from hanrag.settings import PromptSettings, Settings

HISTORY = [Turn("user", "연차는 며칠인가요?"), Turn("assistant", "15일입니다 [1].")]


def source(n: int, page: int | None) -> Source:
    chunk = Chunk(
        chunk_id=f"c{n}",
        document_id="d1",
        position=n,
        text="본문",
        title=f"취업규칙{n}",
        source="취업규칙.txt",
        content_hash="h",
        date=0,
        page=page,
    )
    return Source(n=n, hit=Hit(chunk=chunk, score=1.0), text=f"본문 {n}")


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, name: str, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_prompts(PromptSettings(files={name: write(tmp_path, f"{name}.j2", text)}))
    return caught.value


# ------------------------------------------------------------------ the defaults


def test_defaults_render_the_earlier_texts_byte_for_byte() -> None:
    system, *memory, user = answer_messages("연차 이월은?", [source(1, 3), source(2, None)], HISTORY, True)
    assert system.content == (
        "당신은 회사 내부 문서를 근거로 직원의 질문에 답하는 도우미입니다.\n"
        "규칙:\n"
        "1. 아래 번호가 붙은 출처의 내용만 근거로 한국어로 답하십시오. 출처에 없는 내용은 추측하지 마십시오.\n"
        "2. 근거로 사용한 문장 끝에 출처 번호를 [1], [2]처럼 표시하십시오.\n"
        '3. 출처에 답이 없으면 "제공된 문서에서 답을 찾을 수 없습니다."라고 분명히 말하십시오.\n'
        "4. 간결하고 정확하게, 숫자와 날짜는 출처에 적힌 그대로 쓰십시오."
    )
    assert memory == HISTORY
    assert user.content == "출처:\n[1] 취업규칙1, 3쪽\n본문 1\n\n[2] 취업규칙2\n본문 2\n\n질문: 연차 이월은?"
    no_rag = answer_messages("안녕?", [], [], False, "  존댓말로  ")
    assert [m.content for m in no_rag] == [
        "당신은 회사 직원을 돕는 한국어 도우미입니다. 질문에 간결하고 정확하게 답하십시오. "
        "모르는 내용은 모른다고 말하십시오.\n\n운영자 지침 (위 규칙과 어긋나면 위 규칙을 따르십시오):\n존댓말로",
        "안녕?",
    ]
    planner = planner_messages("그럼 이월은?", HISTORY, "2025-06-15")
    assert planner[0].content.endswith("태그 밖에는 아무것도 쓰지 마십시오. 오늘 날짜는 2025-06-15입니다.")
    assert planner[1].content == (
        "대화 기록:\n사용자: 연차는 며칠인가요?\n도우미: 15일입니다 [1].\n\n마지막 질문: 그럼 이월은?"
    )
    assert planner_messages("이월은?", [], "2025-06-15")[1].content == "마지막 질문: 이월은?"
    sql = table_sql_messages("몇 건?", "shop.orders(id)", "2025-06-15", [], ("SELECT x", "sql_error: no x"))
    assert [m.role for m in sql] == ["system", "user", "assistant", "user"]
    assert sql[1].content == "스키마:\nshop.orders(id)\n\n질문: 몇 건?"
    assert sql[3].content == (
        "앞의 SQL은 실행할 수 없었습니다: sql_error: no x\n규칙을 지켜 고친 SQL을 같은 형식으로 다시 쓰십시오."
    )
    table = table_answer_messages("몇 건?", "SELECT 1", "| 건수 |\n|---|\n| 3 |", [])
    assert table[1].content == "실행한 SQL:\nSELECT 1\n\n조회 결과:\n| 건수 |\n|---|\n| 3 |\n\n질문: 몇 건?"


def test_the_registry_documents_every_prompt() -> None:
    assert set(PROMPTS) >= {
        "answer_system",
        "answer_user",
        "no_rag_system",
        "planner_system",
        "planner_user",
        "sql_system",
        "sql_user",
        "sql_retry",
        "table_answer_system",
        "table_answer_user",
        "judge_system",
        "judge_user",
        "image_description",
    }
    for spec in PROMPTS.values():
        assert spec.required <= set(spec.variables), spec.name
        assert all(meaning for meaning in spec.variables.values()), spec.name
    assert PROMPTS["sql_retry"].required == {"error"}
    assert PROMPTS["answer_user"].required == {"sources", "question"}
    assert set(default_prompts().origins.values()) == {"default"}


def test_judge_and_image_prompts() -> None:
    judge = judge_messages("연차는?", [source(1, None)], "15일입니다 [1].", today="2025-06-15")
    assert "<score>" in judge[0].content and "출처" in judge[0].content
    assert judge[1].content.endswith("질문: 연차는?\n\n평가할 답변:\n15일입니다 [1].")
    assert judge_score("<score> 85 </score><unsupported>none</unsupported>") == 0.85
    assert judge_score("<score>250</score>") == 1.0
    assert judge_score("좋은 답변입니다") is None
    plain = image_description_prompt()
    assert plain.startswith("이미지의 내용을 검색에 쓸 수 있도록 한국어로 자세히 설명하십시오.")
    assert "사용자의 질문" not in plain
    assert "사용자의 질문: 이 표의 합계는?" in image_description_prompt("이 표의 합계는?")


def test_render_takes_exactly_the_documented_variables() -> None:
    prompts = default_prompts()
    with pytest.raises(TypeError):
        prompts.render("sql_retry", error="x")  # sql missing
    with pytest.raises(TypeError):
        prompts.render("answer_system", today="2025-06-15", extra="x")


# ------------------------------------------------------------ operator files


def test_an_operator_file_replaces_a_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, "a.j2", "사내 도우미입니다. 오늘은 {{ today }}.\n")
    prompts = load_prompts(PromptSettings(files={"answer_system": path}))
    assert prompts.origins["answer_system"] == str(path)
    assert prompts.overridden() == {"answer_system": str(path)}
    messages = answer_messages("q", [source(1, None)], [], True, "지침", today="2025-06-15", prompts=prompts)
    # One trailing newline of the file is dropped; the operator's instructions still follow.
    assert messages[0].content == (
        "사내 도우미입니다. 오늘은 2025-06-15.\n\n운영자 지침 (위 규칙과 어긋나면 위 규칙을 따르십시오):\n지침"
    )
    assert messages[1].content == answer_messages("q", [source(1, None)], [], True)[1].content


def test_a_prompt_directory_and_files_which_win(tmp_path: Path) -> None:
    directory = tmp_path / "prompts"
    directory.mkdir()
    write(directory, "sql_retry.j2", "다시: {{ error }}")
    write(directory, "no_rag_system.j2", "디렉터리")
    write(directory, "README.md", "not a prompt")
    winner = write(tmp_path, "no_rag.j2", "파일")
    prompts = load_prompts(PromptSettings(dir=directory, files={"no_rag_system": winner}))
    assert prompts.render("sql_retry", error="e", sql="s") == "다시: e"
    assert prompts.render("no_rag_system", today="2025-06-15") == "파일"
    write(directory, "answer_sytem.j2", "오타")
    with pytest.raises(ConfigError) as typo:
        load_prompts(PromptSettings(dir=directory))
    assert typo.value.code == "prompt_unknown" and "answer_sytem" in typo.value.message
    with pytest.raises(ConfigError) as missing:
        load_prompts(PromptSettings(dir=tmp_path / "없음"))
    assert missing.value.code == "prompt_invalid"


@pytest.fixture
def llm_engine(samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[Any]:
    engines: list[Engine] = []

    def build(base_url: str, **overrides: Any) -> Engine:
        llm = {"backend": "openai", "base_url": base_url, "model": "scripted-model"}
        engine = answer_engine(
            samples_engine.engine, tmp_path / f"llm{len(engines)}", shared_cache_path, llm=llm, **overrides
        )
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        close_answer_engine(engine)


def test_operator_prompts_reach_the_model_server(llm_engine: Any, tmp_path: Path) -> None:
    files = {
        "answer_system": write(tmp_path, "answer.j2", "근거만 쓰는 도우미. 오늘: {{ today }}"),
        "answer_user": write(
            tmp_path, "user.j2", "질문: {{ question }}\n\n자료:\n{{ sources }}\n반드시 [n]으로 인용하십시오."
        ),
        "planner_system": write(
            tmp_path,
            "planner.j2",
            "질의 분석기({{ today }}). <question>, <keywords>, <time>, <route> 태그로 답하십시오.",
        ),
    }
    with scripted_server([sse(["USB 승인은 30일 동안 유효합니다 [1]."])]) as server:
        engine = llm_engine(server.url, prompts={"files": {k: str(v) for k, v in files.items()}})

        async def ask() -> list[Any]:
            options = AskOptions(today=date(2025, 6, 1))
            return [
                e
                async for e in engine.ask(
                    "USB 사용 승인은 며칠 동안 유효한가요?", options=options, caller=SYSTEM
                )
            ]

        events = asyncio.run(ask())
        planner_body = server.bodies(stream=False)[0]
        answer_body = server.bodies(stream=True)[-1]
    assert events[-1].type == "done", events[-1].data
    assert planner_body["messages"][0]["content"] == (
        "질의 분석기(2025-06-01). <question>, <keywords>, <time>, <route> 태그로 답하십시오."
    )
    system, user = answer_body["messages"][0]["content"], answer_body["messages"][-1]["content"]
    assert system == "근거만 쓰는 도우미. 오늘: 2025-06-01"
    assert user.startswith("질문: USB 사용 승인은 며칠 동안 유효한가요?\n\n자료:\n[1] ")
    assert user.endswith("반드시 [n]으로 인용하십시오.")
    assert engine.prompts.origins["answer_system"] == str(files["answer_system"])


# ------------------------------------------------------------ refused at load


def test_a_missing_required_variable_is_refused_at_load(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sql_retry", "SQL이 틀렸습니다. 다시 쓰십시오.")
    assert error.code == "prompt_missing_variable"
    assert "sql_retry" in error.message and "{{ error }}" in error.message and "sql_retry.j2" in error.message
    error = load_error(tmp_path, "answer_user", "{{ question }}만 보고 답하십시오.")
    assert error.code == "prompt_missing_variable" and "{{ sources }}" in error.message
    # Used only under a condition still counts as used.
    load_prompts(
        PromptSettings(
            files={"sql_retry": write(tmp_path, "ok.j2", "{% if error %}오류: {{ error }}{% endif %}")}
        )
    )


def test_an_undocumented_variable_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "answer_system", "{{ company }}의 도우미입니다.")
    assert error.code == "prompt_unknown_variable" and "{{ company }}" in error.message
    assert "today" in error.message  # names what the prompt is given


def test_a_syntax_error_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "planner_system", "오늘은 {{ today }}.\n{% if today %}닫지 않음")
    assert error.code == "prompt_invalid" and "planner_system" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ today.__class__ }}",
        "{{ today['__class__'] }}",
        "{{ today|attr('__cl' ~ 'ass__') }}",
        "{{ today.upper.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_python_internals(tmp_path: Path, text: str) -> None:
    error = load_error(tmp_path, "answer_system", text)
    assert error.code == "prompt_unsafe", error.message


def test_the_sandbox_at_render_time() -> None:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from hanrag.answer import prompts as module

    env = module._environment()
    assert isinstance(env, ImmutableSandboxedEnvironment)
    with pytest.raises(SecurityError):
        env.from_string("{{ x.__class__ }}").render(x="")
    with pytest.raises(SecurityError):
        env.from_string("{{ x.append(1) }}").render(x=[])  # what it is given cannot be changed


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{% include 'other.j2' %}{{ today }}", "prompt_invalid"),
        ("{% extends 'base.j2' %}", "prompt_invalid"),
        ("{{ today|no_such_filter }}", "prompt_invalid"),
        ("{{ today[99] }}", "prompt_invalid"),  # fails on the sample values
        (b"\xff\xfe\x00bad", "prompt_invalid"),
        ("  \n", "prompt_invalid"),
        ("가" * 30000, "prompt_invalid"),  # 90 KB: over the 64 KB cap
    ],
    ids=["include", "extends", "unknown-filter", "sample-render", "not-utf8", "empty", "too-large"],
)
def test_bad_files_are_refused(tmp_path: Path, text: str | bytes, code: str) -> None:
    assert load_error(tmp_path, "answer_system", text).code == code


def test_unknown_names_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as unknown:
        load_prompts(PromptSettings(files={"answer": write(tmp_path, "a.j2", "x")}))
    assert unknown.value.code == "prompt_unknown" and "'answer'" in unknown.value.message
    assert "answer_system" in unknown.value.message  # lists the known names
    with pytest.raises(ConfigError) as unreadable:
        load_prompts(PromptSettings(files={"answer_system": tmp_path / "없는파일.j2"}))
    assert unreadable.value.code == "prompt_invalid" and "없는파일.j2" in unreadable.value.message


def test_a_prompt_set_renders_failures_as_config_errors(tmp_path: Path) -> None:
    prompts = load_prompts(
        PromptSettings(
            files={"sql_retry": write(tmp_path, "r.j2", "{{ error }}{{ sql[10] if sql|length > 5 }}")}
        )
    )
    assert isinstance(prompts, PromptSet)
    assert prompts.render("sql_retry", error="e", sql="s") == "e"
    with pytest.raises(ConfigError) as failed:
        prompts.render("sql_retry", error="e", sql="SELECT")  # index 10 of a 6-character text
    assert failed.value.code == "prompt_render_failed"


# ------------------------------------------------------------ start-up


def bad_prompt_env(tmp_path: Path) -> dict[str, str]:
    path = write(tmp_path, "retry.j2", "다시 쓰십시오.")
    return {"HANRAG_PROMPTS__FILES": json.dumps({"sql_retry": str(path)})}


def test_config_validate_names_the_bad_prompt(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path / "data"), "config", "validate"]
    result = runner.invoke(app, args, env=bad_prompt_env(tmp_path), catch_exceptions=False)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "[prompt_missing_variable]" in lines[0] and "sql_retry" in lines[0] and "error" in lines[0]
    good = runner.invoke(app, args, catch_exceptions=False)
    assert good.exit_code == 0, good.stderr


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["serve", "--port", "1"], {}),
        (["worker", "--burst"], {"HANRAG_JOBS__QUEUE": "redis", "HANRAG_REDIS_URL": "redis://127.0.0.1:1/0"}),
    ],
    ids=["serve", "worker"],
)
def test_serve_and_worker_refuse_a_bad_prompt(
    tmp_path: Path, command: list[str], env: dict[str, str]
) -> None:
    args = ["--data-dir", str(tmp_path / "data"), *command]
    result = CliRunner().invoke(app, args, env={**env, **bad_prompt_env(tmp_path)}, catch_exceptions=False)
    assert result.exit_code == 1
    assert "[prompt_missing_variable]" in result.stderr and "sql_retry" in result.stderr


def test_the_app_does_not_start_with_a_bad_prompt(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", prompts={"files": {"sql_retry": write(tmp_path, "r.j2", "다시")}}
    )
    with pytest.raises(ConfigError) as caught, TestClient(create_app(settings)):
        pass
    assert caught.value.code == "prompt_missing_variable"
