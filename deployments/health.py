"""How soon Serve notices that a Corral replica died, and starts another."""

# Serve health-checks a replica every 10 s by default, and a SIGKILLed replica is found by its
# failed check: a pipeline with one step replica stalled 10.2 s after a kill (measured). Every 2 s
# instead; the timeout stays Serve's 30 s, so a replica busy with a long batch is not killed.
HEALTH_CHECK_PERIOD_S = 2.0
