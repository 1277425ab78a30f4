from audit.main import run

run()
