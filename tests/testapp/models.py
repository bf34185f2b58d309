from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=200)
    words = models.PositiveIntegerField(default=0)
