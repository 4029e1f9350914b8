"""The faults suite shares the admission suite's fixtures. Its cases are the webhooks' (unreachable,
slow, down), judged under a ClusterPolicy whatever kinds the scenario's admission cases run under."""

import pytest

from labgate.components import kyverno as kv
from suites.admission.conftest import adm, area, ci, keys, ns, policy, publish, record  # noqa: F401


@pytest.fixture
def policy_kind() -> kv.PolicyKind:
    return kv.CLUSTER_POLICY
