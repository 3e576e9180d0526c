"""Rule-based detectors on durable-rules, used only through :class:`rules.engine.RulesEngine`."""
