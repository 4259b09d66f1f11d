"""The run engine: ONESHOT, REACT and PLAN_EXECUTE runs that emit §6 events (SPEC §5)."""
