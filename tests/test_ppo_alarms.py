"""The PPO alarms fire on the failure signs and stay quiet on a healthy update."""

from align.rlhf.alarms import MIN_ENTROPY, NEGATIVE_KL_UPDATES, AlarmState, check

HEALTHY = {"objective/kl": 2.0, "policy/ratio": 1.0, "policy/entropy": 2.5}


def test_healthy_update_is_quiet():
    assert check(HEALTHY, AlarmState()) == ([], AlarmState())


def test_negative_kl_warns_once_it_is_sustained():
    state, fired = AlarmState(), []
    for _ in range(NEGATIVE_KL_UPDATES + 2):
        warnings, state = check({**HEALTHY, "objective/kl": -0.5}, state)
        fired.append(bool(warnings))
    assert fired == [False] * (NEGATIVE_KL_UPDATES - 1) + [True, False, False]
    assert check(HEALTHY, state)[1].negative_kl_streak == 0  # a healthy update resets the streak


def test_exploding_ratio_and_collapsed_entropy_warn():
    assert "ratio" in check({**HEALTHY, "policy/ratio": 3.0}, AlarmState())[0][0]
    assert "collapsed" in check({**HEALTHY, "policy/entropy": 0.01}, AlarmState())[0][0]


def test_low_entropy_warns_once_per_fall_below_the_floor():
    # a policy that settles on one answer per prompt stays below the floor: one warning, not one per update
    entropies = [0.4, 0.02, 0.01, 0.03, 0.3, 0.02]
    state, fired = AlarmState(), []
    for entropy in entropies:
        warnings, state = check({**HEALTHY, "policy/entropy": entropy}, state)
        fired.append(bool(warnings))
    assert all(e < MIN_ENTROPY for e in [0.02, 0.01, 0.03])
    assert fired == [False, True, False, False, False, True]
