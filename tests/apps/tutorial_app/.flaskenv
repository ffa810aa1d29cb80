FLASK_APP=myapp:create_app
