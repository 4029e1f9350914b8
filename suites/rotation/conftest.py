"""The rotation suite shares the admission suite's fixtures, and runs per policy kind as it does."""

from suites.admission.conftest import adm, area, ci, keys, ns, policy, policy_kind, publish, pytest_generate_tests, record  # noqa: F401
