"""The dead-letter page's placeholder model: no table, only its permission."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("broadcaster", "0003_appliedversion")]

    operations = [
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))
            ],
            options={
                "managed": False,
                "default_permissions": (),
                "permissions": (("manage_dead_letters", "Can see, replay and purge dead letters"),),
            },
        ),
    ]
