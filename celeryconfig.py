"""Static Celery settings; per-deployment values (broker URL, timeouts) come from Settings."""

task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

imports = ("orchestrator.tasks",)
task_default_queue = "orchestrator"

# No result backend: the database is the record of every job; errbacks still fire.
task_ignore_result = True

# Ack on receipt: a killed worker must never hand a half-run dispatch to another worker.
# Every step is a compare-and-set, and housekeeping settles what a crash leaves behind.
task_acks_late = False
worker_prefetch_multiplier = 4

# Flower sees every task: the worker sends task events (the Procfile passes -E as well).
worker_send_task_events = True
# No task-sent events: one Redis PUBLISH less per task sent; Flower still sees every task
# from the worker's received/started/succeeded events.
task_send_sent_event = False

broker_connection_retry_on_startup = True
# Survives a lost broker connection with unacked messages held (celery 5.7.0, see the class).
worker_consumer = "orchestrator.celery_app:ResilientConsumer"
broker_connection_max_retries = None
worker_cancel_long_running_tasks_on_connection_loss = False
worker_hijack_root_logger = True
