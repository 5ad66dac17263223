"""`Thread`: a conversation to send as a prompt, and the one function that turns any prompt (text,
a list of OpenAI-style messages, or a Thread) into the messages a backend sends."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_SHAPE = '{"role": "user", "content": "..."}'
TOOL_SHAPE = '{"role": "tool", "tool_call_id": "...", "content": "..."}'


class Thread:
    """A conversation, turn by turn: `Thread(inst=None).user(text).assistant(text)...`.

    Pass it as the prompt of any model method; the model answers the last turn. `.user()` and
    `.assistant()` append and return the thread, so turns chain.

    With `tools=`, a call on a Thread appends the tool turns it made when it returns: each
    assistant turn that asked for tools ({"role": "assistant", "tool_calls": [...]}) and each
    tool's result ({"role": "tool", ...}). The answer itself is the call's value, which you add
    with `.assistant(answer)` as without tools, so the conversation goes on from the whole exchange:

        chat = Thread().user("Weather in Lisbon?")
        chat.assistant(await model.generate_async(chat, tools=[weather])).user("And tomorrow?")

    A call that fails appends nothing (`MaxStepsError.messages` holds its exchange). Run one call
    with tools at a time on a Thread: if the Thread changed meanwhile, the tool turns are not
    added and a warning says so.
    """

    def __init__(self, inst: str | None = None):
        self._messages: list[dict] = []
        if inst is not None:
            self._add("system", inst)

    def user(self, text: str) -> Thread:
        """Append a user turn; returns the thread."""
        return self._add("user", text)

    def assistant(self, text: str) -> Thread:
        """Append an assistant turn (a model's answer); returns the thread."""
        return self._add("assistant", text)

    @property
    def messages(self) -> list[dict]:
        """The turns as OpenAI-style message dicts (a copy)."""
        return [copy.deepcopy(m) for m in self._messages]

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        return f"Thread({', '.join(m['role'] for m in self._messages)})"

    def _add(self, role: str, text: str) -> Thread:
        if not isinstance(text, str):
            raise TypeError(f"a {role} turn is text (a str), not {type(text).__name__}")
        self._messages.append({"role": role, "content": text})
        return self

    def _extend(self, messages) -> None:
        """Append a call's tool turns (checked and copied)."""
        self._messages += [checked(m) for m in messages]


def messages_for(prompt: Any, inst: str | None, guide: str | None = None) -> tuple[dict, ...]:
    """The messages to send for `prompt` (a str, a list of message dicts or a Thread), with `inst`
    as the system message. Without `inst`, `guide` (llmnb's own instruction, e.g. to answer in
    JSON) joins the prompt's system message, or becomes one. Bad input raises a short error that
    says what to give instead."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Thread):
        messages = prompt.messages
    elif isinstance(prompt, list | tuple):
        messages = [checked(m) for m in prompt]
    else:
        raise TypeError(f"the prompt must be a string, a list of {MESSAGE_SHAPE} messages or an llmnb.Thread, "
                        f"not {type(prompt).__name__}")
    if not messages:
        raise ConfigError(f"the prompt has no messages; give at least one, e.g. [{MESSAGE_SHAPE}]")
    has_system = any(m["role"] == "system" for m in messages)
    if inst is not None and has_system:
        raise ConfigError("the prompt already has a system message; drop inst= or that message")
    if inst is not None or (guide is not None and not has_system):
        messages.insert(0, {"role": "system", "content": inst if inst is not None else str(guide)})
    elif guide is not None:
        first = next(i for i, m in enumerate(messages) if m["role"] == "system")
        messages[first] = {**messages[first], "content": f"{messages[first]['content']}\n{guide}"}
    return tuple(messages)


def checked(message: Any) -> dict:
    """One message of a list prompt, copied, once its role and content are right: an assistant
    turn may ask for tools ("tool_calls", its content then None), a "tool" turn answers one."""
    if not isinstance(message, dict):
        raise TypeError(f"each message must be a dict like {MESSAGE_SHAPE}, not {type(message).__name__}")
    if "role" not in message or "content" not in message:
        raise ConfigError(f"each message needs a role and a content, like {MESSAGE_SHAPE}; got keys {sorted(message)}")
    role = message["role"]
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise ConfigError(f"a tool turn answers one tool call: give its tool_call_id, like {TOOL_SHAPE}")
    calls = message.get("tool_calls")
    if calls is not None and (role != "assistant" or not isinstance(calls, list) or not all(map(_is_call, calls))):
        raise ConfigError('tool_calls belong to an assistant turn, as a list of {"id": "...", "type": "function", '
                          '"function": {"name": "...", "arguments": "{...}"}}')
    if not isinstance(message["content"], str) and not (calls and message["content"] is None):
        raise TypeError(f"a message's content must be text (a str), not {type(message['content']).__name__}")
    return copy.deepcopy(message)


def _is_call(call: Any) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return False
    function = call["function"]
    return all(isinstance(v, str) for v in (call.get("id"), function.get("name"), function.get("arguments")))


def label_of(messages: tuple[dict, ...]) -> str:
    """What a call is about, for its label: the last user turn (or the last turn of any role)."""
    users = [m for m in messages if m["role"] == "user"]
    return (users or list(messages))[-1]["content"] or ""
