"""The enqueue path behind :mod:`meetingtasks.enqueue.dispatcher`, in three layers.

- :mod:`~meetingtasks.enqueue.prepare`: a task checked and encoded (payload, priority, due time, message); no Redis.
- :mod:`~meetingtasks.enqueue.commands`: what is sent for new tasks (the enqueue script, or the plain commands).
- :mod:`~meetingtasks.enqueue.sending`: the one way they are sent, for every public call, on the one encoder and
  exchange of :mod:`meetingtasks.store.resp`.
"""
