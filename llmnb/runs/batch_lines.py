"""The Batch API's files, as pure functions: requests -> JSONL lines (custom_id = the turn's cache
key), lines -> input files within the provider's limits, output and error lines -> answers and
failures. No I/O here, so all of it is tested without a server.

Servers differ in what they write, so the reading takes both forms it meets: a response `body`
as a JSON object (OpenAI) or as a JSON string (OGX); a failed line as `error` (with or without a
status) or as a response whose `status_code` is 400 or more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..backends.base import Completion
from ..backends.openai.wire import build_request, parse_response
from ..errors import ModelCallError

URL = "/v1/chat/completions"


@dataclass(frozen=True)
class Failure:
    """A line the server could not answer: its message, and the HTTP status when one was given."""

    message: str
    status: int | None = None


Outcome = Completion | Failure


def line_for(key: str, model: str, request: Any, schema_mode: str = "json_schema", drop: tuple[str, ...] = ()) -> str:
    """One JSONL line: the chat completions body of `request` for `model`, named by its cache key."""
    body = build_request(model, request, schema_mode, drop)
    return json.dumps({"custom_id": key, "method": "POST", "url": URL, "body": body}, ensure_ascii=False,
                      separators=(",", ":"))


def files_of(lines: list[str], max_lines: int, max_bytes: int) -> list[list[str]]:
    """The lines cut into input files of at most `max_lines` lines and `max_bytes` bytes each (a
    newline ends every line), in order."""
    files: list[list[str]] = [[]]
    size = 0
    for line in lines:
        n = len(line.encode()) + 1
        if n > max_bytes:
            raise ValueError(f"one request is {n:,} bytes, over the provider's {max_bytes:,} bytes per batch file")
        if len(files[-1]) >= max_lines or size + n > max_bytes:
            files.append([])
            size = 0
        files[-1].append(line)
        size += n
    return [f for f in files if f]


def file_text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def read_lines(text: str) -> dict[str, Outcome]:
    """An output or error file -> custom_id -> its answer or its failure (the lines in any order)."""
    found: dict[str, Outcome] = {}
    for raw in text.splitlines():
        if raw.strip():
            record = json.loads(raw)
            found[str(record.get("custom_id"))] = outcome(record)
    return found


def outcome(record: dict) -> Outcome:
    """One line of an output or error file."""
    response = record.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if isinstance(body, str):
        body = json.loads(body) if body.strip() else {}
    if record.get("error"):
        return failure(record["error"], status)
    if status is not None and status >= 400 or not isinstance(body, dict):
        return failure((body or {}).get("error") if isinstance(body, dict) else body, status)
    try:
        return parse_response(body)
    except ModelCallError as e:
        return Failure(str(e), status)


def failure(error: Any, status: int | None) -> Failure:
    """The server's message for a failed line: `error` is an object with a message, or text."""
    if isinstance(error, dict):
        message = error.get("message") or error.get("code") or json.dumps(error)
        status = status if status is not None else error.get("status_code")
    else:
        message = str(error or "the server gave no reason")
    return Failure(" ".join(str(message).split())[:500], status)


def validation_errors(errors: Any) -> str:
    """The reasons a job failed before running any line (`batch.errors`): "line 3: ..." each."""
    data = getattr(errors, "data", None) or (errors.get("data") if isinstance(errors, dict) else None) or []
    parts = []
    for e in data:
        get = e.get if isinstance(e, dict) else lambda name, e=e: getattr(e, name, None)
        where = f"line {get('line')}: " if get("line") is not None else ""
        parts.append(f"{where}{get('message') or get('code') or 'invalid'}")
    return "; ".join(parts) or "the server gave no reason"
