from alignment.runtime.sampler import IndexStream, eval_batches, total_steps


def test_ranks_read_disjoint_slices_that_cover_an_epoch():
    stream = IndexStream(n=24, seed=3)
    seen = [i for m in range(3) for rank in range(2) for i in stream.batch(m, 4, rank, 2)]
    assert sorted(seen) == list(range(24))  # 3 micro-steps x 2 ranks x 4 = one epoch, each once


def test_stream_is_a_pure_function_of_seed_and_position():
    a, b = IndexStream(10, seed=1), IndexStream(10, seed=1)
    assert [a.batch(m, 3, 0, 1) for m in range(7)] == [b.batch(m, 3, 0, 1) for m in range(7)]
    assert b.batch(5, 3, 0, 1) == IndexStream(10, seed=1).batch(5, 3, 0, 1)  # resume reads the same batch
    assert IndexStream(10, seed=2).batch(0, 10, 0, 1) != a.batch(0, 10, 0, 1)
    first, second = a.batch(0, 10, 0, 1), a.batch(1, 10, 0, 1)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second  # new order each epoch


def test_eval_batches_cover_every_example_once_with_equal_batch_counts():
    per_rank = [eval_batches(11, 3, rank, 2) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    real = [i for batches in per_rank for idx, w in batches for i, wt in zip(idx, w) if wt]
    assert sorted(real) == list(range(11))


def test_total_steps():
    assert total_steps(100, 1.0, -1, 8, 2, 2) == 4
    assert total_steps(100, 0.5, -1, 10, 1, 1) == 5
    assert total_steps(100, 3.0, 7, 8, 2, 2) == 7
