"""The notifications app: records a notification for each event it subscribes to."""
