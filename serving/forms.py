"""Form bodies (multipart, urlencoded) on the BentoML API routes: one that cannot be read is a 400, never a 500,
and a text value in a file field is refused instead of fetched.

BentoML 1.4 parses forms in its ``MultipartSerde``: a parser error, too many parts or a binary part in a JSON
field escaped it as a 500, and a file field given text fetched it as a URL (any public address, read whole into
memory). :func:`install` puts :class:`FormSerde` in its place for both form media types.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from _bentoml_impl import serde as bentoml_serde
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def bad_request(detail: str) -> BentoMLException:
    return BentoMLException(detail, error_code=HTTPStatus.BAD_REQUEST)


class FormSerde(bentoml_serde.MultipartSerde):
    """BentoML's form parsing, with its failures as 400s and no URL fetching."""

    @staticmethod
    async def ensure_file(obj: Any) -> UploadFile:
        if isinstance(obj, UploadFile):
            return obj
        raise bad_request("A file field takes files (multipart parts with a filename, e.g. curl -F "
                          "'images=@photo.jpg'); a text value, such as a URL, is not fetched.")

    async def parse_request(self, request: Any, cls: type) -> Any:
        try:
            return await super().parse_request(request, cls)
        except (BentoMLException, ValidationError):
            raise
        except HTTPException as exc:  # Starlette's form parser: malformed, or too many files or fields
            raise bad_request(f"The form body cannot be read: {exc.detail}") from None
        except (UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise bad_request("A form field that is not a file must be UTF-8 text or JSON "
                              f"({type(exc).__name__}); send images as file parts.") from None


def install() -> None:
    """Serve both form media types with :class:`FormSerde` (idempotent)."""
    for media_type in FORM_MEDIA_TYPES:
        bentoml_serde.ALL_SERDE[media_type] = FormSerde  # type: ignore[index]
