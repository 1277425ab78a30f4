from triage.main import run

run()
