"""``provision chat``: a multi-turn conversation with one deployment, at a terminal or through a pipe.

A session is a loop of turns over one :class:`~provision.client.Client` (the model loads
once). Each turn sends the whole history; the history keeps the user's lines and the
answers without their reasoning (``<think>...</think>``, as DeepSeek-R1's model card asks:
earlier thinking is not fed back). Commands, at a terminal or on a line of their own:
``/reset`` (forget the history), ``/system TEXT`` (replace the system message), ``/exit``.

Failures: a server error, before or in the middle of an answer, is one line and the session
goes on (the failed turn is left out of the history); a server that cannot be reached ends
the session (exit 1). Ctrl-C during an answer stops that answer only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .client import ChatEvent, Client
from .errors import DeploymentError, EngineUnavailableError, ProvisionError
from .smoke import StreamMetrics, measure

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def strip_thinking(text: str) -> str:
    """The answer without its reasoning: every ``<think>...</think>``, and a leading
    ``...</think>`` whose opening tag was in the prompt (R1 distills' template ends with it)."""
    if THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]:
        text = text.split(THINK_CLOSE, 1)[1]
    while THINK_OPEN in text:
        before, _, rest = text.partition(THINK_OPEN)
        text = before + (rest.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in rest else "")
    return text.strip()


class ThinkingSplitter:
    """Labels streamed text ``thinking`` or ``answer`` as it arrives. A tag may be split across
    pieces, so a tail that could begin one is held back until the next piece tells.

    Streaming sees only tags in the output: an answer whose ``<think>`` was in the prompt is
    shown as answer text up to its ``</think>`` (the history still drops it).
    """

    def __init__(self) -> None:
        self.thinking = False
        self._held = ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        text, self._held = self._held + piece, ""
        out: list[tuple[str, str]] = []
        while text:
            tag = THINK_CLOSE if self.thinking else THINK_OPEN
            before, found, after = text.partition(tag)
            if found:
                out.append((self._kind, before))
                self.thinking = not self.thinking
                text = after
                continue
            keep = _partial_tag_length(text, tag)
            out.append((self._kind, text[: len(text) - keep]))
            self._held = text[len(text) - keep :]
            break
        return [(kind, part) for kind, part in out if part]

    def flush(self) -> list[tuple[str, str]]:
        held, self._held = self._held, ""
        return [(self._kind, held)] if held else []

    @property
    def _kind(self) -> str:
        return "thinking" if self.thinking else "answer"


def _partial_tag_length(text: str, tag: str) -> int:
    """How many trailing characters of ``text`` could begin ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


@dataclass
class Conversation:
    """The messages the next turn sends: the system message, then user/assistant pairs."""

    system: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for question, answer in self.turns:
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if user is not None:
            out.append({"role": "user", "content": user})
        return out

    def add(self, user: str, answer: str) -> None:
        self.turns.append((user, strip_thinking(answer)))

    def reset(self) -> None:
        self.turns.clear()


class ChatOutput(Protocol):
    """Where a session writes (``provision.report.chat`` renders it)."""

    def piece(self, kind: str, text: str) -> None: ...
    def answer(self, text: str) -> None: ...  # a whole answer (--no-stream)
    def end_answer(self) -> None: ...
    def interrupted(self) -> None: ...
    def stats(self, metrics: StreamMetrics) -> None: ...
    def error(self, exc: ProvisionError) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class ChatOptions:
    stream: bool = True
    stats: bool = False
    hide_thinking: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)  # checked with check_sampling


class Session:
    """Turns over one client; ``run`` reads lines until EOF or ``/exit`` and returns the exit code."""

    def __init__(
        self,
        client: Client,
        output: ChatOutput,
        options: ChatOptions,
        *,
        system: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.output = output
        self.options = options
        self.conversation = Conversation(system)
        self.failed_turns = 0
        self._clock = clock

    def run(self, lines: Iterable[str]) -> int:
        for line in lines:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if not text.startswith("/"):
                self.turn(text)
            elif self.command(text):
                break
        return 0 if not self.failed_turns else 1

    def command(self, text: str) -> bool:
        """Carry out a ``/command`` (or send the line, for an unknown one); True to end the session."""
        name, _, argument = text.partition(" ")
        if name == "/exit":
            return True
        if name == "/reset":
            self.conversation.reset()
            self.output.note("history cleared")
        elif name == "/system":
            self.conversation.system = argument.strip() or None
            self.output.note("system message set" if argument.strip() else "system message removed")
        else:
            self.turn(text)
        return False

    def turn(self, user: str) -> None:
        """One question and its answer; raises only for an unreachable server (and Ctrl-C at the prompt)."""
        send = self._clock()
        timed: list[tuple[float, ChatEvent]] = []
        stream: Iterator[ChatEvent] | None = None
        try:
            stream = self.client.events(self.conversation.messages(user), **self.options.sampling)
            self._show(stream, timed)
        except KeyboardInterrupt:
            self.output.interrupted()
            return
        except DeploymentError as exc:
            if isinstance(exc, EngineUnavailableError) and not timed:
                raise  # nothing to talk to: the session ends
            self._end(timed)
            self.failed_turns += 1
            self.output.error(exc)
            return
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stops generate / closes the HTTP stream after Ctrl-C
        answer = "".join(event.text for _, event in timed)
        self.conversation.add(user, answer)
        self._end(timed)
        if self.options.stats:
            self.output.stats(measure(send, timed, self._clock(), self.client.count_tokens))

    def _show(self, stream: Iterator[ChatEvent], timed: list[tuple[float, ChatEvent]]) -> None:
        splitter = ThinkingSplitter()
        for event in stream:
            timed.append((self._clock(), event))
            if event.text and self.options.stream:
                for kind, part in splitter.feed(event.text):
                    self._piece(kind, part)
        if self.options.stream:
            for kind, part in splitter.flush():
                self._piece(kind, part)
        else:
            text = "".join(event.text for _, event in timed)
            self.output.answer(strip_thinking(text) if self.options.hide_thinking else text)

    def _piece(self, kind: str, text: str) -> None:
        if not (kind == "thinking" and self.options.hide_thinking):
            self.output.piece(kind, text)

    def _end(self, timed: list[tuple[float, ChatEvent]]) -> None:
        if self.options.stream and any(event.text for _, event in timed):
            self.output.end_answer()


def run_chat(manifest: Any, deployment: str | None, options: ChatOptions, *, system: str | None, terminal: bool) -> int:
    """``provision chat``: connect, then talk until EOF or ``/exit``. Returns the exit code.

    Raises provision errors for what ends the session: a bad option (exit 2), an unknown
    deployment (exit 2), one not applied or not reachable (exit 1).
    """
    from .client import check_sampling, connect
    from .report.chat import ChatPrinter

    check_sampling(options.sampling)  # before a model loads for minutes
    printer = ChatPrinter(terminal=terminal)
    if terminal:
        printer.note(f"connecting to {deployment or 'the deployment'}...")
    with connect(manifest, deployment) as client:
        if client.task != "chat":
            raise DeploymentError(
                f"{client.name} is an embedding deployment (task: {client.task}); it cannot chat",
                hint="chat with a deployment whose task is chat",
            )
        if terminal:
            printer.note(f"{client.name} ({client.engine}): /reset, /system TEXT, /exit; Ctrl-C stops an answer")
        return Session(client, printer, options, system=system).run(printer.lines())
