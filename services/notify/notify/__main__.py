from notify.main import run

run()
