from django.urls import path

from portal import views

app_name = "portal"
urlpatterns = [
    path("<str:token>/", views.home, name="home"),
    path("<str:token>/plans/", views.plans, name="plans"),
    path("<str:token>/plans/<slug:slug>/", views.plan_change, name="plan"),
    path("<str:token>/subscriptions/<str:subscription_id>/cancel/", views.cancel, name="cancel"),
    path("<str:token>/subscriptions/<str:subscription_id>/keep/", views.uncancel, name="uncancel"),
    path("<str:token>/invoices/", views.invoices, name="invoices"),
    path("<str:token>/invoices/<str:invoice_id>/", views.invoice, name="invoice"),
    path("<str:token>/invoices/<str:invoice_id>/pdf/", views.invoice_pdf, name="invoice-pdf"),
    path("<str:token>/payment-method/", views.payment_method, name="payment-method"),
]
