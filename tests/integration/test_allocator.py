"""The served processes run on TCMalloc when it is installed (serving/allocator.py), and say so."""

from __future__ import annotations

import pytest

from serving import allocator
from tests.integration.conftest import process_tree


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="TCMalloc (libtcmalloc-minimal4) is not installed")
def test_gateway_and_every_runner_run_on_tcmalloc(server) -> None:
    processes = process_tree(server)
    assert len(processes) >= 7  # bentoml serve, five runners, the gateway worker
    without = [" ".join(p.cmdline())[-80:] for p in processes
               if not any("libtcmalloc" in m.path for m in p.memory_maps())]
    assert without == []
    assert "Memory allocator: tcmalloc" in server.log.read_text(errors="replace")
