"""The llama.cpp pieces of the batched engine, through llama-cpp-python's low-level bindings:
one model and one context holding N sequences, the chat prompt, and a sampler per sequence.

Everything here runs in the engine's one thread; nothing here knows about asyncio.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelCallError

# llama-cpp-python's defaults for create_chat_completion: the engine samples with the very same
# chain (see SequenceSampler), so a seed gives the answer llama-cpp-python's `Llama` gives.
TOP_K, TOP_P, MIN_P, TYPICAL_P = 40, 0.95, 0.05, 1.0
PENALTY_LAST_N = 64  # Llama(last_n_tokens_size=64)
# Flash attention where llama.cpp supports it, as llama-server chooses: on this project's 2-core
# CPU it generated 3-28 % more tokens a second (benchmarks/results/local.md)
FLASH_ATTN = -1  # LLAMA_FLASH_ATTN_TYPE_AUTO
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
# The samplers see the tokens whose logits are within this much of the highest first (a few dozen
# tokens), then more while those cannot decide the outcome: a linear scan where sorting or
# partitioning 49,152 logits cost ten times as much.
CANDIDATE_MARGINS = (6.0, 24.0, math.inf)


class LlamaContext:
    """A GGUF model and one llama.cpp context with `n_seq` sequences of `n_ctx_seq` tokens each.

    Each sequence gets its own KV stream (llama.cpp's non-unified cache), so one task can never
    take another's room, and attention runs over a task's own cells only.
    """

    def __init__(self, llama_cpp, path: Path, *, n_seq: int, n_ctx_seq: int, n_threads: int | None, n_batch: int = 512):
        self.L = llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # as Llama(verbose=False)
        llama_cpp.llama_backend_init()
        self._load_model(path)
        self._make_context(n_seq, n_ctx_seq, n_threads, n_batch)
        self._make_batch(n_batch)
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self.candidates = np.empty(self.n_vocab, dtype=TOKEN_DATA)  # the samplers' work space (one thread)
        self.ids = np.arange(self.n_vocab, dtype=np.int32)
        self._make_formatter(path)

    def _load_model(self, path: Path) -> None:
        L = self.L
        self.model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        if not self.model:
            raise ConfigError(f"llama.cpp could not load {path}: is it a GGUF model file?")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(self.model)

    def _make_context(self, n_seq: int, n_ctx_seq: int, n_threads: int | None, n_batch: int) -> None:
        L = self.L
        params = L.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = min(n_ctx_seq, self.n_ctx_train) * n_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_threads = params.n_threads_batch = n_threads or os.cpu_count() or 1
        params.kv_unified = False
        params.flash_attn_type = FLASH_ATTN
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise ConfigError(
                f"llama.cpp could not make a context of {n_seq} x {n_ctx_seq} tokens (out of memory?); "
                "pass a smaller parallel= or n_ctx= to Models.create"
            )
        self.n_seq = n_seq
        self.n_ctx_seq = L.llama_n_ctx_seq(self.ctx)
        self.n_batch = min(n_batch, L.llama_n_batch(self.ctx))  # llama.cpp may lower it for small contexts
        self.memory = L.llama_get_memory(self.ctx)

    def _make_batch(self, n_batch: int) -> None:
        """One llama_batch for every step, with numpy views over its arrays."""
        self.batch = self.L.llama_batch_init(n_batch, 0, 1)
        self._tokens = np.ctypeslib.as_array(self.batch.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(n_batch,))
        self._logits = np.ctypeslib.as_array(self.batch.logits, shape=(n_batch,))
        self._seqs = [-1] * n_batch  # the sequence id written in each row of the batch so far
        for i in range(n_batch):
            self.batch.n_seq_id[i] = 1
        self._outputs: np.ndarray | None = None  # this step's logits, one row per output
        self._view: np.ndarray | None = None  # the last array made over llama.cpp's logits buffer
        self._rows: dict[int, int] = {}  # batch item -> its row in this step's logits
        self._best: np.ndarray | None = None  # and each row's highest logit

    def _make_formatter(self, path: Path) -> None:
        """The chat prompt exactly as llama-cpp-python builds it for a GGUF with a chat template
        (Llama.__init__ -> Jinja2ChatFormatter -> chat_formatter_to_chat_completion_handler)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        L = self.L
        template = self.meta("tokenizer.chat_template")
        if template is None:
            self.close()
            raise ConfigError(f"{path.name} has no chat template in its metadata; parallel= needs one")
        eos, bos = L.llama_vocab_eos(self.vocab), L.llama_vocab_bos(self.vocab)
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.token_text(eos) if eos != -1 else "",
            bos_token=self.token_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self.stop_ids = {eos}

    # --- model facts and text -------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = self.L.llama_model_meta_val_str(self.model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            self.L.llama_model_meta_val_str(self.model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        return self.L.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="ignore")

    def prompt_tokens(self, messages) -> list[int]:
        result = self.formatter(messages=list(messages))
        return self.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special)

    def tokenize(self, text: bytes, *, add_bos: bool) -> list[int]:
        room = len(text) + 2
        out = (self.L.llama_token * room)()
        n = self.L.llama_tokenize(self.vocab, text, len(text), out, room, add_bos, True)
        if n < 0:
            room = -n
            out = (self.L.llama_token * room)()
            n = self.L.llama_tokenize(self.vocab, text, len(text), out, room, add_bos, True)
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of a token's text (kept: a few thousand tokens make up most answers)."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self.L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def is_end(self, token: int) -> bool:
        end = self._ends.get(token)
        if end is None:
            end = self._ends[token] = token in self.stop_ids or bool(self.L.llama_vocab_is_eog(self.vocab, token))
        return end

    # --- the batch --------------------------------------------------------------------------------
    def decode(self, items: list[tuple[int, int, int, bool]]) -> int:
        """Decode (token, position, sequence, wants logits) items in one llama_decode; 0 is success."""
        n = len(items)
        tokens, positions, seqs, wants = zip(*items, strict=True)
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._logits[:n] = wants
        seq_id, written = self.batch.seq_id, self._seqs
        for i, s in enumerate(seqs):
            if written[i] != s:  # the same rows carry the same sequences step after step
                seq_id[i][0] = written[i] = s
        self.batch.n_tokens = n
        self._outputs = self._best = None
        return self.L.llama_decode(self.ctx, self.batch)

    def forget(self, seq: int, start: int = 0) -> None:
        """Free the KV cells of sequence `seq` from position `start` on."""
        self.L.llama_memory_seq_rm(self.memory, seq, start, -1)

    def save(self, seq: int) -> ctypes.Array:
        """A copy of the KV cells of sequence `seq` (llama.cpp's sequence state), as bytes."""
        size = self.L.llama_state_seq_get_size(self.ctx, seq)
        data = (ctypes.c_uint8 * size)()
        written = self.L.llama_state_seq_get_data(self.ctx, data, size, seq)
        return data if written == size else (ctypes.c_uint8 * written).from_buffer_copy(data)

    def load(self, seq: int, data: ctypes.Array) -> bool:
        """Put cells `save` copied into sequence `seq`, in place of what it holds; False if llama.cpp
        found no room for them (the sequence is then empty)."""
        self.forget(seq)
        if self.L.llama_state_seq_set_data(self.ctx, data, len(data), seq) == 0:
            self.forget(seq)
            return False
        return True

    def logits(self, i: int) -> np.ndarray:
        """The logits of batch item `i` of the last decode (valid until the next decode)."""
        return self._all_logits()[self._rows[i]]

    def best(self, i: int) -> int:
        """The token with the highest logit for batch item `i` (the lowest id among equals), found
        for every item of the step in one numpy call."""
        if self._best is None:
            self._best = self._all_logits().argmax(axis=1)
        return int(self._best[self._rows[i]])

    def _all_logits(self) -> np.ndarray:
        """This step's logits, one row per item that asked for them, in batch order (llama.cpp
        puts its output rows back in that order). The array is made again only when llama.cpp
        moved its buffer or the number of rows changed."""
        if self._outputs is None:
            wanted = np.flatnonzero(self._logits[:self.batch.n_tokens])
            self._rows = {int(i): row for row, i in enumerate(wanted)}
            pointer = self.L.llama_get_logits(self.ctx)
            address = ctypes.cast(pointer, ctypes.c_void_p).value
            view = self._view
            if view is None or view.ctypes.data != address or len(view) != len(wanted):
                view = self._view = np.ctypeslib.as_array(pointer, shape=(len(wanted), self.n_vocab))
            self._outputs = view
        return self._outputs

    def close(self) -> None:
        L = self.L
        if getattr(self, "batch", None) is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None


class SequenceSampler:
    """One sequence's sampling state: repeat penalty, grammar and the random generator.

    The result equals llama-cpp-python's chain (penalties -> grammar -> top_k -> typical ->
    top_p -> min_p -> temp -> dist, or greedy at temperature 0) with the same seed, but cheaper:
    that chain runs over all 49,152 tokens of the vocabulary at every step, and checking each
    against a grammar costs more than the decode itself when eight sequences share a step. Here
    greedy decoding takes the highest logit straight away when neither the repeat penalty nor a
    grammar can touch it (most tokens); otherwise the same llama.cpp samplers see the tokens
    near the highest logit first, and more only when those cannot decide the outcome (`_enough`).
    """

    def __init__(self, lc: LlamaContext, *, temperature: float, repeat_penalty: float, seed: int | None,
                 gbnf: str | None):
        L = self.L = lc.L
        self.lc = lc
        self.temperature = temperature
        self._owned: list[object] = []  # llama.cpp samplers, freed with this object
        self.penalties = self._own(L.llama_sampler_init_penalties(lc.n_vocab, PENALTY_LAST_N, repeat_penalty, 0.0, 0.0))
        # The tokens the penalty lowers: the last PENALTY_LAST_N accepted, as the sampler counts them.
        self._window: deque[int] = deque()
        self.recent: dict[int, int] = {}
        self.grammar = None
        if gbnf is not None:
            grammar = L.llama_sampler_init_grammar(lc.vocab, gbnf.encode(), b"root")
            if not grammar:
                self.close()
                raise ModelCallError("llama.cpp rejected the grammar made from the JSON schema")
            self.grammar = self._own(grammar)
        self.tail = None  # greedy needs no sampler: the first valid of the sorted candidates
        if temperature != 0:
            tail = self._own(L.llama_sampler_chain_init(L.llama_sampler_chain_default_params()))
            if temperature > 0:
                for s in (L.llama_sampler_init_top_k(TOP_K), L.llama_sampler_init_typical(TYPICAL_P, 1),
                          L.llama_sampler_init_top_p(TOP_P, 1), L.llama_sampler_init_min_p(MIN_P, 1),
                          L.llama_sampler_init_temp(temperature)):
                    L.llama_sampler_chain_add(tail, s)
            L.llama_sampler_chain_add(tail, L.llama_sampler_init_dist(L.LLAMA_DEFAULT_SEED if seed is None else seed))
            self.tail = tail

    def _own(self, sampler):
        self._owned.append(sampler)
        return sampler

    def _apply(self, sampler, data: np.ndarray) -> tuple[int, int]:
        """Run a llama.cpp sampler over `data` in place: (the index it selected or -1, the size it kept)."""
        L = self.L
        array = L.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(L.llama_token_data)), size=len(data), selected=-1, sorted=False
        )
        L.llama_sampler_apply(sampler, ctypes.byref(array))
        return array.selected, array.size

    def sample(self, i: int) -> int:
        """The next token of this sequence from the logits of batch row `i`."""
        best = self.lc.best(i)
        if self.tail is None and self.grammar is None and best not in self.recent:
            return best  # greedy, and no penalty or grammar can lower the highest logit
        logits = self.lc.logits(i)
        n, top = len(logits), float(logits[best])
        for margin in CANDIDATE_MARGINS:
            bound = top - margin  # every token left out has a logit of at most `bound`
            ids = np.flatnonzero(logits > bound) if margin < math.inf else self.lc.ids
            data = self.lc.candidates[:len(ids)]
            data["id"], data["logit"], data["p"] = ids, logits[ids], 0
            self._apply(self.penalties, data)  # a repeat penalty only lowers logits
            if self.grammar is not None:
                self._apply(self.grammar, data)  # sets the logits of forbidden tokens to -inf
            known = data[data["logit"] > bound]
            known = known[np.lexsort((known["id"], -known["logit"]))]  # best first; ties by id, as llama.cpp
            if self._enough(known["logit"], bound, left_out=n - len(known)):
                break
        else:
            raise ModelCallError("the grammar allows no token here (the schema cannot be completed)")
        if self.tail is None:  # greedy
            return int(known["id"][0])
        if self.temperature < 0:  # plain dist draws over the vocabulary in id order
            known = known[np.argsort(known["id"])]
        selected, size = self._apply(self.tail, known)
        if not 0 <= selected < size:
            raise ModelCallError("llama.cpp's sampler selected no token")
        return int(known["id"][selected])

    def _enough(self, known: np.ndarray, bound: float, left_out: int) -> bool:
        """Whether the allowed tokens found (`known`, best first, all above `bound`) decide the draw,
        whatever the tokens not checked or at most `bound` are.

        Greedy needs the best allowed token only. Sampling keeps the TOP_K best allowed tokens,
        cuts them by cumulative probability TOP_P, then drops those below MIN_P times the best:
        the others matter only if fewer than TOP_K were found and they could either pass the
        min-p cut or move the top-p cut (checked with the most mass they could have).
        """
        if len(known) == 0:
            return False
        if bound == -math.inf or self.temperature == 0 or len(known) >= TOP_K:
            return True
        if self.temperature < 0:  # plain dist over every allowed token: needs them all
            return False
        best = float(known[0])
        if bound >= best + math.log(MIN_P) - 1e-3:
            return False
        cum = np.cumsum(np.exp(known.astype(np.float64) - best))
        found = cum[-1]
        most = found + min(TOP_K - len(known), left_out) * math.exp(bound - best)

        def cut(total, slack):  # the last token top-p keeps among those found
            hit = np.nonzero(cum >= TOP_P * total * (1 + slack))[0]
            return int(hit[0]) if len(hit) else len(known) - 1

        return cut(found, -1e-4) == cut(most, 1e-4)

    def accept(self, token: int) -> None:
        if len(self._window) == PENALTY_LAST_N:
            old = self._window.popleft()
            self.recent[old] -= 1
            if not self.recent[old]:
                del self.recent[old]
        self._window.append(token)
        self.recent[token] = self.recent.get(token, 0) + 1
        for sampler in (self.penalties, self.grammar, self.tail):
            if sampler is not None:
                self.L.llama_sampler_accept(sampler, token)

    def close(self) -> None:
        for sampler in self._owned:
            self.L.llama_sampler_free(sampler)  # a chain frees the samplers added to it
        self._owned = []
