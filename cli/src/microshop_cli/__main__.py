from microshop_cli.main import app

app(prog_name="microshop")
