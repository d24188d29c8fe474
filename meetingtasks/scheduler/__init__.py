"""Beat: the delayed-set pump of every service plus the periodic schedule, highly available on Redis.

``create_beat_app()`` builds the Celery app that ``celery -A beat beat`` and ``meetingtasks beat`` run. Its
scheduler (:class:`PlatformScheduler`, a redbeat scheduler) keeps the schedule and a lock in Redis: of two
or more beat processes exactly one fires periodic entries, the others take over within
``beat_lock_timeout_s`` when it dies. Every beat process, lock holder or standby, pumps the delayed sets
of every known service on its own threads (:class:`ServicePumps`), as every worker does.
"""

from meetingtasks.scheduler.app import create_beat_app
from meetingtasks.scheduler.periodic import PlatformScheduler
from meetingtasks.scheduler.pumps import ServicePumps

__all__ = ["PlatformScheduler", "ServicePumps", "create_beat_app"]
