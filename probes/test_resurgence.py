"""One test per (erased concept, rule) of the policy; the plugin generates the cases."""

from gate.plugin import check_rule


def test_rule(gate_rule, gate_result):
    check_rule(gate_result)
