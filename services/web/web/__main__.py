from web.main import run

run()
