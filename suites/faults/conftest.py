"""The faults suite shares the admission suite's fixtures."""

from suites.admission.conftest import adm, area, ci, keys, ns, policy, publish, record  # noqa: F401
