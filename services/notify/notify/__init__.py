"""notify: delivers requested notifications by email, SMS and webhook, with retries and fallback."""
