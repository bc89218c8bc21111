from django.urls import path

from credits.api import views

urlpatterns = [
    path("debit", views.DebitView.as_view(), name="credits-debit"),
    path("refund", views.RefundView.as_view(), name="credits-refund"),
    path("balance/<str:workspace_id>", views.BalanceView.as_view(), name="credits-balance"),
]
