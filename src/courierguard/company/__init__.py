"""The company's operational records: org units, employees, waybill lifecycle and cases.

No personal data of customers lives here (that is the vault's); these are the *task facts* the
need-to-know policies judge a request by: who is assigned to which waybill, which tickets are open.
"""

from courierguard.company.store import CompanyStore, LifecycleChange, check_employee_id

__all__ = ["CompanyStore", "LifecycleChange", "check_employee_id"]
