"""The web app for people: sign-in by email link, the acknowledgement page, the DSL's desk, the governors' report."""
