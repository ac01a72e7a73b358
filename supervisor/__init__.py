"""The Switchyard supervisor behind `./switchyard` (standard library only).

Modules, each depending only on those above it:
  common     exit codes, errors, SWITCHYARD_* environment, the repository's paths
  processes  stage processes: /proc identity, signals, launching with a log file
  config     the stack's configuration as `router --print-config` reports it
  runfiles   RunDir files: atomic writes, pid and state files, the run dir lock
  status     rows of `status` and the not-ready / bad-configuration reports
  control    the control socket (supervisor.sock): server and client
  loop       the supervisor itself: launch, watch, restart, persist, run commands
  commands   one function per command (`start`, `stop`, `status`, ...)
  cli        the argument parser and main()
"""
