"""The simulated ServiceGo objects and their fields (seed 004 names the field types only).

Field types and what a record's fieldDataList entry carries for each (the seed lists the
members; which type fills which member is this simulator's reading):

    field_type_single_line / multi_line / auto_number / geography   fieldValue text
    field_type_number / field_type_formular                        fieldValue "15.00"
    field_type_date                                                fieldValue "2019-11-12"
    field_type_date_time                                           fieldValue "2019-11-12 15:52"
    field_type_single_select / multi_select                        fieldValue option values joined
                                                                   by ",", optionNameList names
    field_type_phone / field_type_email                            fieldValue values joined by ",",
                                                                   tagValueList [{tagName, tagValue}]
    field_type_lookup                                              fieldValue the record id,
                                                                   foreignDataName its name
    field_type_lookup_user                                         fieldValue the user id, userEmail
    field_type_owner                                               fieldValue the owner id,
                                                                   ownerResult {ownerType, ownerName}
    field_type_rich_text                                           fieldValue the HTML, richText
                                                                   {content, attachmentList}

Every record lists every field of its object, empty ones with fieldValue "" (the seed's
"coordinate" example). System fields on every object: name, owner, createUser, createTime,
updateUser, updateTime (the members /v1/datas lists); createTime and updateTime have minute
resolution in the account's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SYSTEM_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "field_type_single_line"),
    ("owner", "field_type_owner"),
    ("createUser", "field_type_lookup_user"),
    ("createTime", "field_type_date_time"),
    ("updateUser", "field_type_lookup_user"),
    ("updateTime", "field_type_date_time"),
)

# operators each field type accepts in search conditions (seed 004's table)
TEXT_OPS = {"is", "not", "contains", "not_contains", "is_null", "is_not_null"}
SELECT_OPS = {"is", "not", "is_any", "not_any", "is_null", "is_not_null"}
TAG_OPS = {"is_any", "not_any", "contains_any", "not_contains_any", "is_null", "is_not_null"}
DATE_OPS = {"is", "not", "is_null", "is_not_null", "greater_than", "greater_than_eq", "less_than", "less_than_eq",
            "greater_than_current", "greater_than_eq_current", "eq_current", "less_than_current",
            "less_than_eq_current"}
NUMBER_OPS = {"is", "not", "greater_than", "greater_than_eq", "less_than", "less_than_eq", "is_null", "is_not_null"}
LOOKUP_OPS = {"is", "not", "is_null", "is_not_null"}

OPERATORS: dict[str, set[str]] = {
    "field_type_auto_number": TEXT_OPS,
    "field_type_single_line": TEXT_OPS,
    "field_type_multi_line": TEXT_OPS,
    "field_type_single_select": SELECT_OPS,
    "field_type_multi_select": SELECT_OPS,
    "field_type_phone": TAG_OPS,
    "field_type_email": TAG_OPS,
    "field_type_date": DATE_OPS,
    "field_type_date_time": DATE_OPS,
    "field_type_number": NUMBER_OPS,
    "field_type_formular": NUMBER_OPS,
    "field_type_lookup": LOOKUP_OPS,
    "field_type_lookup_user": LOOKUP_OPS,
    "field_type_owner": LOOKUP_OPS,
}


@dataclass
class FieldDef:
    api_name: str
    type: str
    options: tuple[tuple[str, str], ...] = ()  # (value, name) for selects
    lookup_object: str | None = None
    unique: bool = False  # an external unique field (uniqueFieldApiName, foreignExternalFieldApiName)


@dataclass
class ObjectDef:
    api_name: str
    fields: list[FieldDef]
    filters: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # filterId -> conditions (all must hold)

    def field(self, api_name: str) -> FieldDef | None:
        for f in self.fields:
            if f.api_name == api_name:
                return f
        return None


def _system() -> list[FieldDef]:
    return [FieldDef(name, kind) for name, kind in SYSTEM_FIELDS]


LEVELS = (("opt_1", "Bronze"), ("opt_2", "Silver"), ("opt_3", "Gold"))
TAGS = (("t_vip", "VIP"), ("t_new", "New"), ("t_partner", "Partner"), ("t_churn", "Churn risk"))
STATUSES = (("open", "Open"), ("pending", "Pending"), ("solved", "Solved"), ("closed", "Closed"))
PRIORITIES = (("low", "Low"), ("normal", "Normal"), ("high", "High"), ("urgent", "Urgent"))


def default_objects() -> dict[str, ObjectDef]:
    customer = ObjectDef("customer", [
        *_system(),
        FieldDef("sysOrganizationNo", "field_type_single_line", unique=True),
        FieldDef("level", "field_type_single_select", options=LEVELS),
        FieldDef("dianhua", "field_type_phone"),
        FieldDef("annualRevenue", "field_type_number"),
        FieldDef("description", "field_type_rich_text"),
        FieldDef("coordinate", "field_type_geography"),
    ], filters={1: [], 2: [{"fieldApiName": "level", "operator": "is", "value": "opt_3"}]})
    contact = ObjectDef("contact", [
        *_system(),
        FieldDef("externalId", "field_type_single_line", unique=True),
        FieldDef("youxiang", "field_type_email"),
        FieldDef("dianhua", "field_type_phone"),
        FieldDef("organization", "field_type_lookup", lookup_object="customer"),
        FieldDef("tags", "field_type_multi_select", options=TAGS),
        FieldDef("birthday", "field_type_date"),
        FieldDef("calcFormula", "field_type_formular"),
        # seed 004's search example names it on a contact ("weiyibiaoshi", "unique identifier"): the
        # documented unique field the shipped pipeline matches contacts by. externalId above is a
        # field of this simulated account only, as an account's own configured fields are.
        FieldDef("weiyibiaoshi", "field_type_single_line", unique=True),
    ], filters={1: [], 2: [{"fieldApiName": "tags", "operator": "is_any", "value": "t_vip"}]})
    case = ObjectDef("case", [
        *_system(),
        FieldDef("caseNo", "field_type_auto_number"),
        FieldDef("contact", "field_type_lookup", lookup_object="contact"),
        FieldDef("status", "field_type_single_select", options=STATUSES),
        FieldDef("priority", "field_type_single_select", options=PRIORITIES),
        FieldDef("assignee", "field_type_lookup_user"),
        FieldDef("content", "field_type_rich_text"),
        FieldDef("dueTime", "field_type_date_time"),
        FieldDef("remark", "field_type_multi_line"),
    ], filters={1: [], 2: [{"fieldApiName": "status", "operator": "not", "value": "closed"}]})
    return {o.api_name: o for o in (customer, contact, case)}
