"""core.threads.single_thread: one torch thread inside, the caller's count restored after, even on an error."""

import pytest
import torch

from core.threads import single_thread


def test_one_thread_inside_and_the_count_restored_even_after_an_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), single_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
