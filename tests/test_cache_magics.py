"""The answer cache through %%llm_parallel in a real IPython shell: `* N` copies are samples, the
summary line says where the answers came from, --refresh asks again."""

from __future__ import annotations

from fault_server import NumberedServer

from llmnb import Models


def test_copies_are_samples_kept_and_refreshed(ip, tmp_path, capsys):
    with NumberedServer() as server:
        ip.user_ns["kept"] = Models.create("openai:demo", base_url=server.base_url, temperature=0.9,
                                           cache=str(tmp_path / "magic.sqlite"))
        cell = "greet * 5: Hello\nother: Hi"
        # one at a time: only their numbering tells the copies apart (none is in flight with another)
        first = ip.run_cell_magic("llm_parallel", "--model kept -q -c 1", cell)
        assert len(set(first.values())) == 6 and server.requests == 6
        assert "6 done; 0 from the cache, 6 sent" in capsys.readouterr().out

        again = ip.run_cell_magic("llm_parallel", "--model kept -q", cell)
        assert dict(again) == dict(first) and server.requests == 6  # greet_3 is sample 3 again
        assert "6 done; 6 from the cache, 0 sent" in capsys.readouterr().out

        fresh = ip.run_cell_magic("llm_parallel", "--model kept -q --refresh", cell)
        assert not set(fresh.values()) & set(first.values()) and server.requests == 12
        assert ip.run_cell_magic("llm_parallel", "--model kept -q", cell) == fresh


def test_without_a_cache_the_summary_line_is_as_before(ip, capsys):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.01) as server:
        ip.user_ns["plain"] = Models.create("openai:demo", base_url=server.base_url)
        ip.run_cell_magic("llm_parallel", "--model plain -q", "a: hi")
    assert capsys.readouterr().out.strip().endswith("1 done")
