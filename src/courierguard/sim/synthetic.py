"""Synthetic senders and recipients: Chinese names, phones and addresses that look like real input.

Every value is generated; nothing here comes from a real person. One :class:`PartyGenerator` per
seed gives the same sequence of parties on every run, so tests, the demo and the simulator can share
fixtures without storing personal data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import phonenumbers

from courierguard.domain import Address, Party

MOBILE_PREFIXES: tuple[str, ...] = (
    # China Mobile, Unicom, Telecom, Broadnet and the virtual operators, as allocated by MIIT.
    # Left out because they never serve as a contact phone: 154 and 194 (unallocated), 174
    # (satellite and maritime), 140-144 (13-digit IoT), 146/148/149 (data-only blocks, which
    # libphonenumber also rejects, so the vault would refuse them).
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
    "145", "147",
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "162", "165", "166", "167",
    "170", "171", "172", "173", "175", "176", "177", "178",
    "180", "181", "182", "183", "184", "185", "186", "187", "188", "189",
    "190", "191", "192", "193", "195", "196", "197", "198", "199",
)  # fmt: skip
"""Every three-digit prefix of a mainland mobile number that can appear as a contact phone."""

# Mobile prefixes weighted by how common they are on real waybills: the old 13x/15x/18x blocks
# dominate, the newer 16x/17x/19x blocks and the 14x data blocks are rarer but must appear.
_PREFIX_WEIGHT = {"13": 10, "15": 8, "18": 8, "17": 3, "19": 3, "16": 1, "14": 1}

COMPOUND_SURNAMES: tuple[str, ...] = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "慕容", "令狐", "司徒", "夏侯", "尉迟", "公孙",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class City:
    """A city of the synthetic world: where outlets, hubs and parties are placed."""

    code: str
    province: str
    name: str
    area_code: str
    lat: float
    lon: float
    districts: tuple[str, ...]


CITIES: tuple[City, ...] = (
    City("BJ", "北京市", "北京市", "010", 39.9042, 116.4074, ("朝阳区", "海淀区", "东城区", "西城区", "丰台区", "通州区")),
    City("SH", "上海市", "上海市", "021", 31.2304, 121.4737, ("浦东新区", "徐汇区", "静安区", "闵行区", "杨浦区", "普陀区")),
    City("GZ", "广东省", "广州市", "020", 23.1291, 113.2644, ("天河区", "越秀区", "海珠区", "白云区", "番禺区")),
    City("SZ", "广东省", "深圳市", "0755", 22.5431, 114.0579, ("南山区", "福田区", "罗湖区", "宝安区", "龙岗区")),
    City("HZ", "浙江省", "杭州市", "0571", 30.2741, 120.1551, ("西湖区", "上城区", "拱墅区", "滨江区", "余杭区")),
    City("CD", "四川省", "成都市", "028", 30.5728, 104.0668, ("锦江区", "武侯区", "青羊区", "成华区", "金牛区")),
    City("WH", "湖北省", "武汉市", "027", 30.5928, 114.3055, ("江汉区", "武昌区", "洪山区", "江岸区", "汉阳区")),
    City("XA", "陕西省", "西安市", "029", 34.3416, 108.9398, ("雁塔区", "碑林区", "未央区", "莲湖区", "长安区")),
    City("NJ", "江苏省", "南京市", "025", 32.0603, 118.7969, ("鼓楼区", "玄武区", "秦淮区", "建邺区", "江宁区")),
    City("CQ", "重庆市", "重庆市", "023", 29.5630, 106.5516, ("渝中区", "江北区", "南岸区", "沙坪坝区", "渝北区")),
    City("TJ", "天津市", "天津市", "022", 39.3434, 117.3616, ("和平区", "河西区", "南开区", "河东区", "滨海新区")),
    City("ZZ", "河南省", "郑州市", "0371", 34.7466, 113.6254, ("金水区", "中原区", "二七区", "管城回族区", "郑东新区")),
)  # fmt: skip
"""The cities of the synthetic world, with province, landline area code and centre coordinates."""

_ROAD_SUFFIX = ("路", "街", "大道", "巷")
_COMPLEX = ("小区", "花园", "公寓", "家园", "苑", "新村")


class PartyGenerator:
    """Deterministic synthetic parties (name, phone, address) for a seed.

    >>> g = PartyGenerator(7)
    >>> p = g.party()
    >>> PartyGenerator(7).party() == p
    True
    """

    def __init__(self, seed: int, *, messy_share: float = 0.08, landline_share: float = 0.04) -> None:
        from faker import Faker  # imported here: it takes a tenth of a second, and the CLI rarely needs it

        self._rng = random.Random(seed)
        self._faker = Faker("zh_CN")
        self._faker.seed_instance(seed)
        self._messy_share = messy_share
        self._landline_share = landline_share
        weights = [_PREFIX_WEIGHT[p[:2]] for p in MOBILE_PREFIXES]
        self._prefixes = MOBILE_PREFIXES
        self._cum = list(_cumulative(weights))

    def party(self, city: City | None = None) -> Party:
        """A sender or recipient; landlines use the area code of the party's city."""
        city = city or self._rng.choice(CITIES)
        address = self.address(city)
        return Party(name=self.name(), phone=self.phone(city), address=address)

    def name(self) -> str:
        """A Chinese name; about 2% carry a compound surname such as 欧阳 or 司马."""
        if self._rng.random() < 0.02:
            return self._rng.choice(COMPOUND_SURNAMES) + str(self._faker.first_name())
        return str(self._faker.last_name()) + str(self._faker.first_name())

    def mobile(self) -> str:
        """A clean 11-digit mainland mobile number."""
        prefix = self._rng.choices(self._prefixes, cum_weights=self._cum)[0]
        return prefix + f"{self._rng.randrange(100_000_000):08d}"

    def phone(self, city: City | None = None) -> str:
        """A contact phone as typed into an order: mostly clean mobiles, some messy, some landlines.

        Landlines carry the area code of ``city`` (a random city when not given).
        """
        roll = self._rng.random()
        if roll < self._landline_share:
            return self.landline(city or self._rng.choice(CITIES))
        number = self.mobile()
        if roll < self._landline_share + self._messy_share:
            return self._messy(number)
        return number

    def landline(self, city: City) -> str:
        """A fixed-line number with the city's area code: 8 local digits, valid as numbering plans
        allocate them (libphonenumber's metadata: some blocks, 010-800…, are not fixed lines)."""
        while True:
            first = str(self._rng.randint(2, 8))
            number = f"{city.area_code}-{first}{self._rng.randrange(10_000_000):07d}"
            if phonenumbers.is_valid_number(phonenumbers.parse(number, "CN")):
                return number

    def address(self, city: City | None = None) -> Address:
        """A delivery address; the detail ends with building, unit and room, which masking hides."""
        city = city or self._rng.choice(CITIES)
        rng = self._rng
        road = str(self._faker.street_name()).rstrip("路街")[:6] + rng.choice(_ROAD_SUFFIX)
        complex_name = str(self._faker.last_name()) + rng.choice(("阳", "华", "新", "景", "和", "康"))
        detail = (
            f"{road}{rng.randint(1, 999)}号{complex_name}{rng.choice(_COMPLEX)}"
            f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(1, 33)}{rng.randint(1, 4):02d}室"
        )
        return Address(
            province=city.province, city=city.name, district=rng.choice(city.districts), detail=detail
        )

    def _messy(self, number: str) -> str:
        style = self._rng.randrange(5)
        if style == 0:
            return f"+86 {number[:3]} {number[3:7]} {number[7:]}"
        if style == 1:
            return f"{number[:3]}-{number[3:7]}-{number[7:]}"
        if style == 2:
            return f"+86{number}"
        if style == 3:
            return f"{number[:3]} {number[3:7]} {number[7:]}"
        return f"86-{number}"


def _cumulative(weights: list[int]) -> list[int]:
    total = 0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return out
