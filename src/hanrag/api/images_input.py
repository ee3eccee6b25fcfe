"""Images a question carries, as every API face receives them (issue P11).

The native ``images`` list, the legacy ``image_data`` (one string or a list) and the
OpenAI-compatible ``image_url`` content parts all end here: refused with
``vision_unavailable`` when no provider has the vision role (before anything is decoded
or fetched), else checked by :func:`hanrag.answer.images.load_images` (stable codes:
``image_invalid``, ``image_too_large``, ``image_unsupported_type``, ``too_many_images``,
``image_url_not_allowed``, ``image_url_failed``) before the answer starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hanrag.answer.images import load_images
from hanrag.errors import InvalidInputError
from hanrag.llm.base import ImageInput

if TYPE_CHECKING:
    from hanrag.engine import Engine
    from hanrag.settings import ImageSettings

# As the answer engine says it (which refuses such a question too).
VISION_UNAVAILABLE = "이미지가 포함된 질문에 답하려면 이미지 분석 모델(vision 역할의 모델)이 필요합니다."


def image_values(value: Any) -> list[Any]:
    """What a client sent as its images: nothing (``None``, ``""``, ``{}``, ``[]``), one
    value, or a list of values (each checked later)."""
    if value is None or value == "" or value == {} or value == []:
        return []
    return list(value) if isinstance(value, list) else [value]


def vision_available(engine: Engine) -> bool:
    return engine.generators.get("vision") is not None


async def question_images(
    values: Sequence[Any], *, engine: Engine, settings: ImageSettings
) -> list[ImageInput]:
    """The checked images of a question (none when ``values`` is empty)."""
    if not values:
        return []
    if not vision_available(engine):
        raise InvalidInputError(VISION_UNAVAILABLE, code="vision_unavailable", field="images")
    return await load_images(values, settings, engine.settings.offline_policy)
