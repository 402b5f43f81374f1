"""The embedded stack exactly as ``scanfleet up`` runs it, on free ports and a temp folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scanfleet.cli.stack import Stack, StackOptions
from tests.helpers import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(
        StackOptions(data_dir=tmp_path_factory.mktemp("stack"), scan_duration=1.0, poll_interval=0.2)
    )
