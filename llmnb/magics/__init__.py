"""%llm_model, %%llm_extract and %%llm_parallel. Loaded by `%load_ext llmnb`."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import ChainMap, Counter
from collections.abc import Sequence

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Int, Unicode

from .. import Model, Models, Timeline, listen
from ..cache import Sources, refreshing, sample_index
from ..errors import ConfigError
from ..registry import DEFAULT
from ..tools import Toolbox
from .fill import FillError, fill
from .parse import ParseError, TaskSpec, parse_tasks
from .results import Results
from .runner import make_transformer, run_blocking
from .tasks import Done, run_tasks

RESULT_WIDTH = 70


class Interrupted(KeyboardInterrupt):
    """The cell was interrupted; IPython shows this one line instead of a traceback. Still an
    error to the kernel, so "Run All" stops here as after any interrupt."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


@magics_class
class LlmMagics(Magics):
    """Defaults are settable with %config, e.g. `%config LlmMagics.model = "openai:gpt-4o-mini"`."""

    shell: InteractiveShell  # IPython's Magics types it optional; registered magics always have one
    model = Unicode(DEFAULT, help="Default model of the llmnb magics (a Models.create name).").tag(config=True)
    max_concurrency = Int(0, help="Default cap on tasks run at once by %%llm_parallel (0: no cap).").tag(config=True)
    # A notebook cell wants a value: a small model's answer that does not fit the type (a string
    # that runs on until max_tokens, say) is asked for once more before the cell fails.
    retries = Int(1, help="Default times a typed task asks the model again when its answer does not fit "
                          "the type (0: never).").tag(config=True)

    def __init__(self, shell):
        super().__init__(shell)
        self._models: dict[str, object] = {}

    # -- magics -------------------------------------------------------------------------------
    @line_magic
    def llm_model(self, line: str):
        """%llm_model [NAME]: show the magics' default model, or set it (same names as Models.create)."""
        name = line.strip()
        if name:
            self._get_model(name)  # load it now, so a bad name fails here, in one line
            self.model = name
        print(f"llmnb magics use {self.model}")

    @magic_arguments()
    @argument("type", help="the result type, evaluated in your namespace: list[str], a dataclass, Literal[...]")
    @argument("--model", "-m", help="model name for this cell (default: %%llm_model)")
    @argument("-o", "--out", metavar="VAR", help="store the result in this variable")
    @argument("--retries", "-r", type=int, default=None, metavar="N",
              help="ask again up to N times when the answer does not fit the type (default: 1)")
    @cell_magic
    def llm_extract(self, line: str, cell: str):
        """%%llm_extract TYPE [--model M] [-o VAR] [--retries N]: the cell body is the prompt; shows and
        returns a TYPE value."""
        return run_blocking(self.run_async("llm_extract", line, cell))

    @magic_arguments()
    @argument("--model", "-m", help="model name, or a Model variable, for this cell (default: %%llm_model)")
    @argument("-o", "--out", metavar="VAR", help="store the results (a dict by task name) in this variable")
    @argument("--max-concurrency", "-c", type=int, default=None, metavar="N", help="run at most N tasks at once")
    @argument("--quiet", "-q", action="store_true", help="do not print each result as it completes")
    @argument("--retries", "-r", type=int, default=None, metavar="N",
              help="ask again up to N times when a typed task's answer does not fit its type (default: 1)")
    @argument("--for", dest="for_", nargs=3, metavar=("NAME", "in", "VAR"),
              help="run each task once per item of the list VAR, with {NAME} filled from the item")
    @argument("--tools", "-t", metavar="F,G", help="functions of your namespace every task's model may call")
    @argument("--refresh", action="store_true", help="ask the model again even for answers the cache holds")
    @cell_magic
    def llm_parallel(self, line: str, cell: str):
        """%%llm_parallel [--model M] [-o VAR] [--max-concurrency N] [--for NAME in VAR] [--retries N] [--tools F,G]
        [--refresh]: run the tasks concurrently.

        One task per line (an indented line continues the prompt above):

            names -> list[str]: Generate 20 English names     extract into a type
            label ? spam | not spam: I am a Nigerian prince    classify into labels
            greet * 10: Hello, how are you?                    10 times: greet_1 .. greet_10
            story: Tell me a story about {animal}              generate text
            What is the capital of France?                     a bare prompt, named p1, p2...

        {name} fills in a variable of your namespace (nothing is evaluated; other braces, as in
        JSON, stay as written; {{name}} keeps literal braces). Results print as each task
        completes and the live timeline shows every task; Interrupt cancels what is still
        running and keeps what finished.

        `--for doc in docs` runs every line once per item of the list (or tuple, pandas Series)
        `docs`, with {doc} filled from the item: `label ? spam | ham: {doc}` gives label_1 ..
        label_N in the list's order; `res.as_list()` gives the values back as a list.

        `--tools weather,search` gives every task those functions of your namespace as tools
        (see `Model`): each task's tool runs show on the timeline under its model call.

        With a model that keeps answers (`Models.create(..., cache="answers.sqlite")`), a re-run
        (after an Interrupt or a crash, say) sends only what is not kept yet, and the summary line
        says how many answers came from the cache; `--refresh` asks again for every task.
        """
        return run_blocking(self.run_async("llm_parallel", line, cell))

    # -- the one implementation, awaited on the kernel's loop or run by run_blocking -------------
    async def run_async(self, magic: str, line: str, cell: str):
        try:
            line = self.shell.var_expand(line)
            if magic == "llm_extract":
                # TYPE is Python, spaces and quotes included (Literal["a", "b"]): it runs up to the
                # first option, and only the options go through the shell-like argument parser.
                type_expr, options = split_type(line)
                if not type_expr:
                    raise UsageError("%%llm_extract needs a TYPE first, e.g. %%llm_extract list[str] -o names")
                args = self._options("llm_extract", f"TYPE {options}")
                args.type = type_expr
                return await self._extract(args, cell)
            args = self._options(magic, line)
            return await self._parallel(args, cell)
        except (ConfigError, ParseError, FillError) as e:
            raise UsageError(str(e)) from None  # one short line, not a traceback

    async def _extract(self, args, cell: str):
        if not cell.strip():
            raise UsageError("%%llm_extract needs a prompt in the cell body")
        target = self._eval_type(args.type)
        prompt = fill(cell.strip(), self.shell.user_ns)
        model = self._get_model(args.model)
        with Timeline(title=f"%%llm_extract on {model.name}"):
            value = await model.extract_async(target, prompt, retries=self._count(args, "retries", "0 or more"))
        if args.out:
            self.shell.user_ns[args.out] = value
        return value

    async def _parallel(self, args, cell: str) -> Results:
        specs = parse_tasks(cell)
        model = self._get_model(args.model)
        tools = self._tools(args.tools)
        jobs = self._jobs(model, specs, self._for_each(args.for_), self._count(args, "retries", "0 or more"), tools)
        limit = self._count(args, "max_concurrency", "at least 1 (or 0 for no cap)")
        results = Results()
        if args.out:  # bound now, so even an interrupted cell leaves what finished in VAR
            self.shell.user_ns[args.out] = results
        sources = Sources()
        with (Timeline(title=f"%%llm_parallel: {len(jobs)} tasks on {model.name}") as timeline, listen(sources),
              refreshing() if args.refresh else contextlib.nullcontext()):
            results.timeline = timeline
            try:
                await run_tasks(jobs, max_concurrency=limit, on_result=None if args.quiet else report, results=results)
            except asyncio.CancelledError:  # Interrupt, on the kernel's loop or llmnb's
                kept = f"; results kept in {args.out}" if args.out else ""
                raise Interrupted(f"Interrupted: {results.summary_line()}{cache_note(model, sources)}{kept}") from None
        print(results.summary_line() + cache_note(model, sources), flush=True)
        return results

    def _for_each(self, for_: list[str] | None) -> tuple[str, list] | None:
        """`--for NAME in VAR` -> (NAME, the items of VAR), checked; None without --for."""
        if for_ is None:
            return None
        name, word, var = for_
        if word != "in" or not name.isidentifier() or not var.isidentifier():
            raise UsageError(f"write --for NAME in VAR, e.g. --for doc in docs, not --for {' '.join(for_)}")
        if var not in self.shell.user_ns:
            raise UsageError(f"--for {name} in {var}: no variable {var} is defined; define it in an earlier cell")
        items = self.shell.user_ns[var]
        if not is_sequence(items):
            raise UsageError(f"--for {name} in {var}: {var} is not a list but {type(items).__name__}; "
                             f"give a list, tuple or pandas Series (e.g. list({var}))")
        if not len(items):
            raise UsageError(f"--for {name} in {var}: {var} is empty, so there is nothing to run")
        return name, list(items)

    def _tools(self, names: str | None) -> tuple:
        """`--tools f,g` -> the functions f and g of the namespace, checked."""
        if names is None:
            return ()
        found = []
        for name in (n.strip() for n in names.split(",")):
            item = self.shell.user_ns.get(name)
            if not callable(item):
                what = "is not defined" if item is None else f"is a {type(item).__name__}, not a function"
                raise UsageError(f"--tools: {name or '(empty)'} {what}; give functions of your namespace, "
                                 "e.g. --tools weather,search")
            found.append(item)
        Toolbox(found)  # their schemas, checked now
        return tuple(found)

    def _jobs(self, model, specs: list[TaskSpec], for_each: tuple[str, list] | None, retries: int,
              tools: tuple = ()) -> dict:
        """Task name -> a function making the task's call, prompts filled now (so a missing
        variable fails before anything runs). With --for, each line runs once per item."""
        targets = {spec.type_expr: self._eval_type(spec.type_expr) for spec in specs if spec.type_expr}
        copies: Counter = Counter()  # identical tasks (`* N`) are samples 0, 1, ... of their request

        def numbered(spec: TaskSpec, prompt: str):
            copy = (spec.kind, spec.type_expr, spec.labels, prompt)
            copies[copy] += 1
            return in_sample(copies[copy] - 1, job(model, spec, prompt, targets, retries, tools))

        if for_each is None:
            return {spec.name: numbered(spec, fill(spec.prompt, self.shell.user_ns)) for spec in specs}
        var, items = for_each
        jobs, written = {}, {spec.name for spec in specs}
        for spec in specs:
            for i, item in enumerate(items, 1):
                name = f"{spec.name}_{i}"
                if name in jobs or name in written:
                    raise UsageError(f"the task name {name!r} is used twice with --for; rename the task {spec.name!r}")
                jobs[name] = numbered(spec, fill(spec.prompt, ChainMap({var: item}, self.shell.user_ns)))
        return jobs

    # -- the parts ------------------------------------------------------------------------------
    def _options(self, magic: str, line: str):
        try:
            return parse_argstring(getattr(self, magic), line)
        except ValueError as e:  # shlex: an unclosed quote
            raise UsageError(f"cannot read the options {line.strip()!r} ({e}); see %{magic}?") from None

    def _count(self, args, name: str, allowed: str) -> int:
        """The cell's --NAME option, or else its %config default; a UsageError when below 0."""
        value = getattr(args, name)
        value = getattr(self, name) if value is None else value
        if value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be {allowed}, not {value}")
        return value

    def _eval_type(self, expr: str):
        try:
            return eval(expr, self.shell.user_ns)  # the user's own type expression, never a prompt
        except Exception as e:
            raise UsageError(f"unknown type {expr!r} ({type(e).__name__}: {e}); define it in an earlier cell") from None

    def _get_model(self, name: str | None):
        name = name or self.model
        own = self.shell.user_ns.get(name)
        if isinstance(own, Model):  # a model made in the notebook, e.g. with base_url=
            return own
        if name not in self._models:
            try:
                self._models[name] = Models.create(name)
            except ConfigError as e:
                raise UsageError(str(e)) from None
        return self._models[name]


def job(model, spec: TaskSpec, prompt: str, targets: dict, retries: int, tools: tuple = ()):
    """The call a task makes, as a function returning its coroutine."""
    if spec.kind == "extract":
        return lambda: model.extract_async(targets[spec.type_expr], prompt, retries=retries, tools=tools)
    if spec.kind == "classify":
        return lambda: model.classify_async(list(spec.labels or ()), prompt, retries=retries, tools=tools)
    return lambda: model.generate_async(prompt, tools=tools)


def in_sample(n: int, make):
    """`make`'s call, run as sample `n` of its request in the answer cache."""
    async def run():
        with sample_index(n):
            return await make()
    return run


def cache_note(model, sources: Sources) -> str:
    """"; 1,400 from the cache, 600 sent" when the model keeps answers."""
    return f"; {sources.line()}" if model.cache is not None else ""


def report(done: Done) -> None:
    """One printed line per completed task: when it began and ended, and its value, cut short."""
    if done.began is None:
        when = f"failed at {done.ended:5.1f} s"
    else:
        when = f"begin {done.began:5.1f} s, done {done.ended:5.1f} s"
    text = " ".join(repr(done.value).split())
    if len(text) > RESULT_WIDTH:
        text = text[: RESULT_WIDTH - 1] + "…"
    print(f"{done.name:<12} {when}: {text}", flush=True)


def is_sequence(items) -> bool:
    """A list, tuple, range, pandas Series or numpy array: ordered, sized; not text, a set or a dict."""
    if isinstance(items, (str, bytes, bytearray)):
        return False
    return isinstance(items, Sequence) or (hasattr(items, "__len__") and hasattr(items, "tolist"))


def split_type(line: str) -> tuple[str, str]:
    """`Literal["a", "b"] -o x` -> ('Literal["a", "b"]', '-o x'): options start at a word
    beginning with - or -- and a letter, which no type expression has (Literal[1, -1] stays whole)."""
    found = re.search(r"(?:^|\s)(--?[A-Za-z])", line)
    if found is None:
        return line.strip(), ""
    return line[: found.start(1)].strip(), line[found.start(1):]


def load_ipython_extension(shell) -> None:
    magics = LlmMagics(shell)
    shell.register_magics(magics)
    if not any(getattr(t, "__qualname__", "").startswith("make_transformer") for t in shell.input_transformers_cleanup):
        shell.input_transformers_cleanup.append(make_transformer(shell))
