"""The magics class: %llm_model, %%llm_extract and %%llm_parallel, one coroutine per cell magic.

Each cell magic's coroutine is awaited on the kernel's loop (the input transformer of runner.py
rewrites the cell into `await ...llm_parallel_async(line, cell)`) or run by `run_blocking`."""

from __future__ import annotations

import asyncio
import functools
import re
from collections import ChainMap

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Int, Unicode

from ..errors import ConfigError
from ..events import listen
from ..model import Model
from ..registry import DEFAULT, Models
from ..runs import Results, Run, Task
from ..runs.fill import FillError, fill
from ..runs.grid import compare_async
from ..timeline import Timeline
from . import namespace
from .filling import fill_in
from .parse import ParseError, TaskSpec, parse_tasks
from .report import Interrupted, cache_note, report
from .runner import make_transformer, run_blocking
from .sources import Sources

USAGE_ERRORS = (ConfigError, ParseError, FillError)  # shown as one short line, not a traceback


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
        self._models: dict[str, Model] = {}

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
    @argument("--stream", "-s", action="store_true", help="show the value filling in as the answer is written")
    @cell_magic
    def llm_extract(self, line: str, cell: str):
        """%%llm_extract TYPE [--model M] [-o VAR] [--retries N] [--stream]: the cell body is the prompt;
        shows and returns a TYPE value. `--stream` shows the value filling in as it is written."""
        return run_blocking(self.llm_extract_async(line, cell))

    @magic_arguments()
    @argument("--model", "-m", help="model name, or a Model variable, for this cell (default: %%llm_model); "
                                    "a,b,c: every task on each model at once, shown as one table")
    @argument("-o", "--out", metavar="VAR", help="store the results (a dict by task name) in this variable")
    @argument("--max-concurrency", "-c", type=int, default=None, metavar="N", help="run at most N tasks at once")
    @argument("--quiet", "-q", action="store_true", help="do not print each result as it completes")
    @argument("--retries", "-r", type=int, default=None, metavar="N",
              help="ask again up to N times when a typed task's answer does not fit its type (default: 1)")
    @argument("--for", dest="for_", nargs=3, metavar=("NAME", "in", "VAR"),
              help="run each task once per item of the list VAR, with {NAME} filled from the item")
    @argument("--tools", "-t", metavar="F,G", help="functions of your namespace every task's model may call")
    @argument("--refresh", action="store_true", help="ask the model again even for answers the cache holds")
    @argument("--cluster", metavar="CLIENT", help="run on a Dask cluster: a distributed.Client variable or a "
                                                  "scheduler address")
    @argument("--batch", action="store_true", help="send the tasks as the provider's batch jobs (half the price)")
    @cell_magic
    def llm_parallel(self, line: str, cell: str):
        """%%llm_parallel [--model M] [-o VAR] [--max-concurrency N] [--for NAME in VAR] [--retries N] [--tools F,G]
        [--refresh] [--cluster CLIENT | --batch]: run the tasks concurrently.

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

        `--cluster client` runs the tasks on a Dask cluster's workers, `--batch` as the
        provider's batch jobs; both return the same results (see `llmnb.runs`).

        `--model a,b,c` (names or Model variables) runs every task on each model at once: the
        cell shows one table, tasks down and models across, each answer with its latency and
        cost; results are keyed by (task, model) and `res.grid()` lays them out.
        """
        return run_blocking(self.llm_parallel_async(line, cell))

    async def llm_extract_async(self, line: str, cell: str):
        """%%llm_extract's one implementation, awaited on the kernel's loop or run by run_blocking."""
        try:
            # TYPE is Python, spaces and quotes included (Literal["a", "b"]): it runs up to the
            # first option, and only the options go through the shell-like argument parser.
            type_expr, options = split_type(self.shell.var_expand(line))
            if not type_expr:
                raise UsageError("%%llm_extract needs a TYPE first, e.g. %%llm_extract list[str] -o names")
            if not cell.strip():
                raise UsageError("%%llm_extract needs a prompt in the cell body")
            args = self._options("llm_extract", f"TYPE {options}")
            target = namespace.eval_type(type_expr, self.shell.user_ns)
            prompt = fill(cell.strip(), self.shell.user_ns)
            model = self._get_model(args.model)
            retries = self._count(args, "retries", "0 or more")
            with Timeline(title=f"%%llm_extract on {model.name}"):
                if args.stream:
                    value = await fill_in(model.extract_stream_async(target, prompt, retries=retries))
                else:
                    value = await model.extract_async(target, prompt, retries=retries)
        except USAGE_ERRORS as e:
            raise UsageError(str(e)) from None
        if args.out:
            self.shell.user_ns[args.out] = value
        return value

    async def llm_parallel_async(self, line: str, cell: str) -> Results:
        """%%llm_parallel's one implementation: the cell -> a `Run`, executed here, on a cluster or
        as batch jobs (or, with --model a,b, on every model at once: a grid), with the live
        timeline and a line per finished task."""
        try:
            args = self._options("llm_parallel", self.shell.var_expand(line))
            models = self._columns(args.model)
            run = self._run(args, cell, next(iter(models.values())))
            if len(models) > 1 and (args.cluster or args.batch):
                raise UsageError("a grid of models (--model a,b) runs here: drop --cluster / --batch")
            executor = namespace.executor(args.cluster, args.batch, self.shell.user_ns)
        except USAGE_ERRORS as e:
            raise UsageError(str(e)) from None
        results = Results()
        if args.out:  # bound now, so even an interrupted cell leaves what finished in VAR
            self.shell.user_ns[args.out] = results
        sources = Sources()
        on_result = None if args.quiet else report
        if len(models) > 1:  # the grid: its table is the cell's output (Results._repr_html_)
            title = f"%%llm_parallel: {len(run.tasks)} tasks on {', '.join(models)}"
            execute = functools.partial(compare_async, models, run.tasks, max_concurrency=run.max_concurrency,
                                        refresh=run.refresh, on_result=on_result, results=results)
        else:
            title = f"%%llm_parallel: {len(run.tasks)} tasks on {run.model.name}"
            execute = functools.partial(run.execute_async, executor, on_result=on_result, results=results)
        with Timeline(title=title) as timeline, listen(sources):
            results.timeline = timeline
            try:
                await execute()
            except USAGE_ERRORS as e:  # an executor refusing the run (--batch on a model without the Batch API)
                raise UsageError(str(e)) from None
            except asyncio.CancelledError:  # Interrupt, on the kernel's loop or llmnb's
                kept = f"; results kept in {args.out}" if args.out else ""
                raise Interrupted(f"Interrupted: {results.summary_line()}{cache_note(run.model, sources)}{kept}") \
                    from None
        print(results.summary_line() + cache_note(run.model, sources), flush=True)
        return results

    def _columns(self, names: str | None) -> dict[str, Model]:
        """--model a,b -> {"a": model a, "b": model b} (names or Model variables); one model without a comma."""
        labels = [name.strip() for name in (names or self.model).split(",")]
        if not all(labels) or len(set(labels)) != len(labels):
            raise UsageError(f"--model {names}: give distinct model names separated by commas, e.g. --model a,b")
        return {label: self._get_model(label) for label in labels}

    def _run(self, args, cell: str, model: Model) -> Run:
        """The cell as a `Run` on `model`: every line a task, prompts filled now (so a missing
        variable fails before anything runs); with --for, each line once per item."""
        specs = parse_tasks(cell)
        ns = self.shell.user_ns
        targets = {spec.type_expr: namespace.eval_type(spec.type_expr, ns) for spec in specs if spec.type_expr}
        retries, tools = self._count(args, "retries", "0 or more"), namespace.tools(args.tools, ns)
        limit = self._count(args, "max_concurrency", "at least 1 (or 0 for no cap)")

        def task(spec: TaskSpec, name: str, prompt: str) -> Task:
            options = {"tools": tools} if spec.kind == "generate" else {"retries": retries, "tools": tools}
            target = targets[spec.type_expr] if spec.type_expr else list(spec.labels) if spec.labels else None
            return Task(name, spec.kind, prompt, target=target, options=options)

        for_each = namespace.for_each(args.for_, ns)
        if for_each is None:
            tasks = [task(spec, spec.name, fill(spec.prompt, ns)) for spec in specs]
        else:
            var, items = for_each
            written = {spec.name for spec in specs}
            tasks = [task(spec, f"{spec.name}_{i}", fill(spec.prompt, ChainMap({var: item}, ns)))
                     for spec in specs for i, item in enumerate(items, 1)]
            clash = next((t.name for t in tasks if t.name in written), None)
            if clash is not None:
                raise UsageError(f"the task name {clash!r} is used twice with --for; rename the task "
                                 f"{clash.rsplit('_', 1)[0]!r}")
        return Run(model, tasks, max_concurrency=limit, refresh=args.refresh)

    def _options(self, magic: str, line: str):
        try:
            return parse_argstring(getattr(type(self), magic), line)
        except ValueError as e:  # shlex: an unclosed quote
            raise UsageError(f"cannot read the options {line.strip()!r} ({e}); see %{magic}?") from None

    def _count(self, args, name: str, allowed: str) -> int:
        """The cell's --NAME option, or else its %config default; a UsageError when below 0."""
        value = getattr(args, name)
        value = getattr(self, name) if value is None else value
        if value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be {allowed}, not {value}")
        return value

    def _get_model(self, name: str | None) -> Model:
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


def load_ipython_extension(shell) -> None:
    """Register the magics, and the rewrite of their cells into an await (once per shell)."""
    shell.register_magics(LlmMagics(shell))
    if not any(getattr(t, "__qualname__", "").startswith("make_transformer") for t in shell.input_transformers_cleanup):
        shell.input_transformers_cleanup.append(make_transformer(shell))


def split_type(line: str) -> tuple[str, str]:
    """`Literal["a", "b"] -o x` -> ('Literal["a", "b"]', '-o x'): options start at a word
    beginning with - or -- and a letter, which no type expression has (Literal[1, -1] stays whole)."""
    found = re.search(r"(?:^|\s)(--?[A-Za-z])", line)
    if found is None:
        return line.strip(), ""
    return line[: found.start(1)].strip(), line[found.start(1):]
