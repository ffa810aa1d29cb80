FLASK_APP=fm2app:create_app
