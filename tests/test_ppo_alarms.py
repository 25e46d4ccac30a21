"""The PPO alarms fire on the failure signs and stay quiet on a healthy update."""

from align.rlhf.alarms import NEGATIVE_KL_UPDATES, check

HEALTHY = {"objective/kl": 2.0, "policy/ratio": 1.0, "policy/entropy": 2.5}


def test_healthy_update_is_quiet():
    assert check(HEALTHY, 0) == ([], 0)


def test_negative_kl_warns_once_it_is_sustained():
    streak, fired = 0, []
    for _ in range(NEGATIVE_KL_UPDATES + 2):
        warnings, streak = check({**HEALTHY, "objective/kl": -0.5}, streak)
        fired.append(bool(warnings))
    assert fired == [False] * (NEGATIVE_KL_UPDATES - 1) + [True, False, False]
    assert check(HEALTHY, streak)[1] == 0  # a healthy update resets the streak


def test_exploding_ratio_and_collapsed_entropy_warn():
    assert "ratio" in check({**HEALTHY, "policy/ratio": 3.0}, 0)[0][0]
    assert "collapsed" in check({**HEALTHY, "policy/entropy": 0.01}, 0)[0][0]
