"""Asterisk servers as first-class objects, and the AMI client that acts on live calls.

- `tables`: the servers and their sip_server names (migration 0009);
- `servers`: add / list / remove, the sip_server check, the `local` server of a fresh install;
- `wire`: panoramisk's AMI protocol under our own connection (what panoramisk's Manager
  does is replaced, see docs/ami.md);
- `connection`: one server's connection: login, action time-outs, ping watchdog, reconnect
  with back-off, guarded event handlers;
- `channels`: the live channel registry a connection keeps from events;
- `service`: the process's connections, one per server, and the join of live calls to holds.
"""
