"""Privacy on the host: secrets and prompts are removed before anything leaves the process that saw them.

`scrub` applies the secrets catalog (agent/catalog/secrets.toml, extended by the agent config's
[privacy] section) to command lines, URLs and free text; `logs` puts the same rule on every log line.
"""
