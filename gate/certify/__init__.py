"""``gate certify``: how fragile is an erasure before any pull request arrives.

Runs a standard, documented benign fine-tune (``recipe``: one per model family) against an
unlearned model, the policy's checks on each result (``run``), and writes the resurgence with
its intervals as a certificate (``certificate``: JSON and Markdown; ``track``: an MLflow run tagged
``gate.kind=certificate``). A pull request's check links to the latest certificate of its model
line. See docs/certify.md.
"""
