# %% [markdown]
# # The llmnb magics
#
# Magics run LLM tasks without writing any asyncio code. Load them once per kernel:

# %%
# %load_ext llmnb

# %% [markdown]
# `%llm_model` shows or sets the model the magics use (the same names as `Models.create`).

# %%
# NBVAL_CHECK_OUTPUT
# %llm_model

# %% [markdown]
# ## `%%llm_extract`: one typed answer
#
# The first line names the type (any type expression from your notebook), the cell body is the
# prompt. `-o VAR` keeps the answer in a variable.

# %%
# %%llm_extract list[str] -o colours
Name five colours of the rainbow.

# %%
# NBVAL_CHECK_OUTPUT
type(colours).__name__

# %% [markdown]
# Types you define yourself work too, for example a dataclass:

# %%
from dataclasses import dataclass


@dataclass
class Person:
    name: str
    age: int


# %%
# %%llm_extract Person -o alice
Alice is 31 years old and lives in Paris.

# %%
# NBVAL_CHECK_OUTPUT
isinstance(alice, Person), type(alice.age).__name__

# %% [markdown]
# ## `%%llm_parallel`: many tasks in one cell
#
# One task per line; each line's form says what it does:
#
# | line | task |
# |---|---|
# | `names -> list[str]: Generate 20 names` | extract a value of a type |
# | `label ? spam \| not spam: I am a prince...` | classify into labels |
# | `greet * 10: Hello, how are you?` | the same prompt 10 times (`greet_1` ... `greet_10`) |
# | `story: Tell me about {animal}` | generate text |
# | `What is the capital of France?` | a bare prompt, named `p1`, `p2`, ... |
#
# Results print as each task completes, the live timeline shows every task, and `-o VAR` keeps the
# results, by task name. The first notebook's two tasks:

# %% tags=["nbval-ignore-output"]
# %%llm_parallel -o seed
names -> list[str]: Generate 20 English names with first name and surname
label ? spam | not spam: I am a Nigerian prince and will make you very rich!

# %%
# NBVAL_CHECK_OUTPUT
sorted(seed), seed["label"]

# %% [markdown]
# The LangChain example's ten identical prompts, without typing them ten times (`-q` keeps the
# output short; the timeline still shows all ten):

# %% tags=["nbval-ignore-output"]
# %%llm_parallel -o hello -q
greet * 10: Hello, how are you?

# %%
# NBVAL_CHECK_OUTPUT
len(hello), sorted(hello)[:3]

# %% [markdown]
# ## `{name}` fills in your variables
#
# Only a plain name in braces is filled, by looking it up; nothing in a prompt is ever run as
# code. Other braces, as in JSON, stay exactly as written, and `{{name}}` keeps literal braces.

# %%
animal = "octopus"

# %% tags=["nbval-ignore-output"]
# %%llm_parallel -o filled -q
fact: One short fact about the {animal}.
shape -> dict[str, int]: Return JSON like {"arms": 0} with the number of arms of an {animal}.

# %%
# NBVAL_CHECK_OUTPUT
[row["name"].split(": ", 1)[1][:45] for row in filled.timeline.records()]

# %% [markdown]
# ## A failing task does not lose the others
#
# Here one prompt is far too long for the tiny model's context. That task fails, its row and its
# entry show the error, and the other results are kept. The last line counts the failures.

# %%
huge = "word " * 5000

# %% tags=["nbval-ignore-output"]
# %%llm_parallel -o mixed
ok ? yes | no: Is water wet?
big: Summarise this: {huge}
hi: Say hello.

# %%
# NBVAL_CHECK_OUTPUT
sorted(mixed.errors), type(mixed.errors["big"]).__name__, mixed["ok"] in ("yes", "no")

# %% [markdown]
# ## Mistakes get one short line
#
# A typo in an option, a type that is not defined, an unknown model: one line saying what to do,
# not a traceback.

# %% tags=["raises-exception", "nbval-ignore-output"]
# %%llm_extract Persn
Alice is 31.

# %% [markdown]
# Interrupt (the stop button) cancels every task still running and keeps the results that
# finished; their rows end as *cancelled*. See `%%llm_parallel?` for every option, and
# `%config LlmMagics.model = "openai:gpt-4o-mini"` to change the default model for the magics.
