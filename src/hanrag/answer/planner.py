"""Planner: question + recent conversation -> standalone question, keywords, time range, route.

With a language model the planner asks for tagged fields, parses them strictly
and retries (3 attempts) before falling back; without one (the embedded
default) it is deterministic: Kiwi keywords, rule-based Korean date phrases,
and follow-up questions completed with the previous turn's key nouns.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date

from hanrag.answer.prompts import PromptSet, planner_messages
from hanrag.errors import HanragError
from hanrag.korean.analyzer import morpheme_tokens, tagged
from hanrag.korean.dates import DateRange, parse_date_range
from hanrag.llm.base import GenerationOptions, Generator, Turn

log = logging.getLogger("hanrag.planner")

ROUTES = ("documents", "table", "none")


@dataclass(slots=True)
class Plan:
    question: str  # standalone
    keywords: list[str]
    time_range: DateRange | None
    route: str = "documents"
    planner: str = "rules"  # "llm" | "rules"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "question": self.question,
            "keywords": self.keywords,
            "time_range": None
            if self.time_range is None
            else [self.time_range.start.isoformat(), self.time_range.end.isoformat()],
            "route": self.route,
            "planner": self.planner,
        }


# A follow-up leans on the previous turn: demonstratives, or a short question
# that starts with a connective ("그럼", "그러면") or has no content noun of its own.
_FOLLOW_UP = re.compile(
    r"^(?:그럼|그러면|그리고|그건|그것은|그거|이건|이것은|저건|또|그 외에|그밖에)|(?:그|이|저|해당)\s*(?:것|거|때|사람|문서|제품|규정|경우)"
)
_GREETING = re.compile(
    r"^(?:안녕|고마워|감사합니다|감사해요|반가워|수고|ㅎㅇ|hi|hello|thanks)", re.IGNORECASE
)
_NOUN_TAGS = {"NNG", "NNP", "SL", "SH", "XR"}
# Aggregation cues that send a question to the table route (without a model, that route
# answers from the indexed rows and says that exact aggregates need a model).
_TABLE_CUES = re.compile(
    r"몇\s*건|건수|합계|총합|총\s*(?:금액|매출|수량|건)|평균|월별|연도별|연별|분기별|주별|일별|부서별|"
    r"추이|상위\s*\d+|하위\s*\d+|top\s*\d+|비교|최대값|최솟값|최댓값|최소값|집계",
    re.IGNORECASE,
)


def _key_nouns(text: str, limit: int = 4) -> list[str]:
    nouns: list[str] = []
    for form, tag in tagged(text):
        if tag in _NOUN_TAGS and len(form) > 1 and form not in nouns:
            nouns.append(form)
    return nouns[:limit]


def rule_plan(question: str, history: list[Turn], today: date) -> Plan:
    question = question.strip()
    notes: list[str] = []
    standalone = question
    previous_user = next((t.content for t in reversed(history) if t.role == "user"), None)
    # A greeting is never a follow-up: "안녕하세요" must not become "<previous nouns> 안녕하세요".
    greeting = bool(_GREETING.match(question)) and len(question) <= 12
    if previous_user and not greeting:
        own_nouns = _key_nouns(question)
        if _FOLLOW_UP.search(question) or len(own_nouns) <= 1:
            carried = [n for n in _key_nouns(previous_user) if n not in question]
            if carried:
                standalone = f"{' '.join(carried)} {question}"
                notes.append("follow-up completed with the previous question's key nouns")
    route = "none" if greeting else "table" if _TABLE_CUES.search(standalone) else "documents"
    keywords = list(dict.fromkeys(morpheme_tokens(standalone)))
    return Plan(standalone, keywords, parse_date_range(standalone, today), route, "rules", notes)


def retrieval_query(plan: Plan) -> str:
    """The text retrieval runs on. A language model's keywords join the standalone question
    (those it does not already contain), as the earlier service searched on its model's
    keywords. The rule-based planner's keywords are the question's own morphemes: joined,
    they only add lemma forms, and that lowered R@1 of the answers on the KorQuAD dev set
    (0.920 -> 0.917; all keywords: 0.913), so its plans search on the question alone."""
    if plan.planner != "llm":
        return plan.question
    extra = [k for k in dict.fromkeys(plan.keywords) if k and k.lower() not in plan.question.lower()]
    return " ".join([plan.question, *extra]) if extra else plan.question


_TAG = re.compile(r"<(question|keywords|time|route)>(.*?)</\1>", re.DOTALL)
_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})\s*~\s*(\d{4}-\d{2}-\d{2})")


def parse_planner_output(text: str, original: str) -> Plan:
    """Strict parse of the tagged answer; raises ValueError on anything off."""
    fields = {name: value.strip() for name, value in _TAG.findall(text)}
    missing = {"question", "keywords", "time", "route"} - set(fields)
    if missing:
        raise ValueError(f"missing tags: {', '.join(sorted(missing))}")
    route = fields["route"].lower()
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}")
    time_range = None
    if fields["time"].lower() not in ("none", ""):
        match = _RANGE.fullmatch(fields["time"])
        if not match:
            raise ValueError(f"bad time range {fields['time']!r}")
        start, end = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
        if start > end:
            raise ValueError("time range ends before it starts")
        time_range = DateRange(start, end, fields["time"])
    keywords = [k.strip() for k in fields["keywords"].split(",") if k.strip()]
    question = fields["question"] or original
    return Plan(question, keywords, time_range, route, "llm")


class Planner:
    def __init__(self, llm: Generator | None, *, attempts: int = 3, prompts: PromptSet | None = None) -> None:
        """``prompts``: the operator's prompts (none: the Korean defaults)."""
        self.llm = llm if llm is not None and llm.is_llm else None
        self.attempts = attempts
        self.prompts = prompts

    async def plan(self, question: str, history: list[Turn], today: date) -> Plan:
        if self.llm is None:
            return rule_plan(question, history, today)
        messages = planner_messages(question, history, today.isoformat(), prompts=self.prompts)
        options = GenerationOptions(max_tokens=200, temperature=0.0)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                return parse_planner_output(await self.llm.complete(messages, options), question)
            except ValueError as exc:
                problem = str(exc)
                log.info("planner output rejected", extra={"attempt": attempt, "reason": problem})
            except HanragError as exc:
                problem = exc.code
                break  # the server is down or broken: retrying the same call will not help
        plan = rule_plan(question, history, today)
        plan.notes.append(f"LLM planner failed ({problem}); rule-based plan used")
        return plan
