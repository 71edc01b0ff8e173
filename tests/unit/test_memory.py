"""glibc's allocator arenas are capped where the C library is glibc (etl.core.memory)."""

from __future__ import annotations

import platform

import pytest

from etl.core.memory import cap_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_arena_cap_is_set_on_glibc() -> None:
    assert cap_malloc_arenas() is True
