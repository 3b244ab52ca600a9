"""The gate's pytest entry: ``pytest probes/ --checkpoint X --update Y --policy P``.

The ``resurgence_gate`` plugin (installed with the package) adds the options and turns the
policy's (concept, rule) pairs into tests; see ``gate/plugin.py``.
"""
