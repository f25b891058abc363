"""Optimizer auto-selection and automatic re-optimization of registered DSPy programs.

Modules, pure logic first:

- ``settings``: the ``[[optimize]]`` entries of the config (``OptimizeProgram``).
- ``recommend``: which DSPy optimizer fits (rules as the prior, learned from past runs).
- ``ensemble``: the top-k optimizers that fit one budget, its split, and which result is kept.
- ``harvest``: training examples from executions whose feedback passed a threshold.
- ``budget`` / ``budget_lm``: the account of a run's LM calls and cost, and the LM wrapper
  that charges it and stops the run at its budget.
- ``runner``: one optimization (load, score, compile, score, save), no daemon state.
- ``rollout``: the promotion gate and the canary verdict (pure).
- ``records``: the ``optimizer_run`` / ``adaptation`` events this package appends.
- ``queries``: the read-model queries (jobs, history, live quality, triggers).
- ``jobs``: the job manager (worker thread, persistence as events, resume).
- ``service``: the drift trigger and the rollout driver (a polling thread).
- ``api`` / ``cli``: the HTTP endpoints and the ``adaptd optimize`` / ``trainset`` commands.
(``adaptd.daemon.demo.toy`` is a tiny offline task with a scripted LM for trying it out.)
"""
