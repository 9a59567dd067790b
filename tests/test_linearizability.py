"""The linearizability checker (tests/linearizability.py) on histories known to be, or not
to be, linearizable."""

from tests.linearizability import Op, check, check_key


def w(p, v, call, ret, key="x"):
    return Op(p, "write", key, v, None, call, ret)


def r(p, out, call, ret, key="x"):
    return Op(p, "read", key, None, out, call, ret)


def cas(p, exp, new, ok, call, ret, key="x"):
    return Op(p, "cas", key, (exp, new), ok, call, ret)


def test_sequential_history_is_linearizable():
    assert check_key([w(1, 1, 0, 1), r(1, 1, 2, 3), w(1, 2, 4, 5), r(1, 2, 6, 7)])


def test_stale_read_after_a_completed_write_is_not():
    assert not check_key([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)])


def test_concurrent_read_may_see_either_value():
    assert check_key([w(1, 1, 0, 1), w(1, 2, 2, 6), r(2, 1, 3, 4), r(3, 2, 3, 5)])


def test_reads_may_not_go_back_in_time():
    # Both reads overlap the write, but once one read saw 2 a later read cannot see 1.
    assert not check_key([w(1, 1, 0, 1), w(1, 2, 2, 10), r(2, 2, 3, 4), r(3, 1, 5, 6)])


def test_initial_value_is_none():
    assert check_key([r(1, None, 0, 1), w(2, 1, 2, 3)])
    assert not check_key([r(1, 5, 0, 1)])


def test_cas_success_and_failure_follow_the_register():
    assert check_key([w(1, 1, 0, 1), cas(2, 1, 2, True, 2, 3), cas(3, 1, 3, False, 4, 5),
                      r(1, 2, 6, 7)])
    assert not check_key([w(1, 1, 0, 1), cas(2, 1, 2, False, 2, 3)])
    assert not check_key([w(1, 1, 0, 1), cas(2, 1, 2, True, 2, 3), r(1, 1, 4, 5)])


def test_a_write_that_never_returned_may_take_effect_late_or_never():
    pending = w(1, 7, 0, None)
    assert check_key([pending, r(2, None, 1, 2), r(2, 7, 10, 11)])
    assert check_key([pending, r(2, None, 1, 2), r(2, None, 10, 11)])
    # ...but not before it was called, and it takes effect at most once.
    assert not check_key([r(2, 7, 0, 1), w(1, 7, 2, None)])
    assert not check_key([w(3, 1, 0, 1), pending, r(2, 7, 2, 3), w(3, 2, 4, 5),
                          r(2, 7, 6, 7)])


def test_pending_cas_with_unknown_result():
    assert check_key([w(1, 1, 0, 1), cas(2, 1, 2, None, 2, None), r(1, 2, 3, 4)])
    assert check_key([w(1, 1, 0, 1), cas(2, 1, 2, None, 2, None), r(1, 1, 3, 4)])


def test_history_is_checked_per_key():
    ok, key = check([w(1, 1, 0, 1, "a"), r(2, 1, 2, 3, "a"), w(1, 1, 0, 1, "b"),
                     r(2, None, 2, 3, "b")])
    assert (ok, key) == (False, "b")
    assert check([w(1, 1, 0, 1, "a"), r(2, None, 2, 3, "b")]) == (True, None)


def test_memoization_keeps_wide_concurrency_fast():
    # 40 concurrent writes of the same value and reads: exponential without the cache.
    ops = [w(i, 1, 0, 100) for i in range(40)] + [r(99, 1, 101, 102)]
    assert check_key(ops)
    ops = [w(i, i, 0, 100) for i in range(14)] + [r(99, 99, 101, 102)]
    assert not check_key(ops)
