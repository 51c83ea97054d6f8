"""`workbench-dev`: the local stack (SeaweedFS, the five services and the console on localhost) and the demo on it.

It comes with the services, not with the client SDK: it imports the SDK (its output helpers, its client),
never the other way round.
"""
