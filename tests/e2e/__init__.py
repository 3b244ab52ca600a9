"""End-to-end tier: whole gate runs (gate check, the pytest plugin, gate study), the HTML report in
Chromium, the GitHub workflow under act, history over real MLflow stores."""
