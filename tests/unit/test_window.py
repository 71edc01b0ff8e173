from etl.core.pull.window import Slice, next_second, plan_slices, probe_pages, window_start


def test_window_start_overlaps_the_cursor_by_the_lookback():
    assert window_start("2024-03-01 00:00:05", 10) == "2024-02-29 23:59:55"
    assert window_start(None, 10) is None


def test_plan_slices_cuts_at_boundaries_in_order_and_ignores_duplicates_and_outsiders():
    slices = plan_slices("2024-01-01 00:00:00", "2024-12-31 00:00:00",
                         ["2024-06-01 00:00:00", "2024-03-01 00:00:00", "2024-03-01 00:00:00", "2025-01-01 00:00:00"])
    assert slices == [
        Slice("2024-01-01 00:00:00", "2024-03-01 00:00:00"),
        Slice("2024-03-01 00:00:00", "2024-06-01 00:00:00"),
        Slice("2024-06-01 00:00:00", "2024-12-31 00:00:00"),
    ]


def test_plan_slices_without_lower_bound():
    assert plan_slices(None, "2024-12-31 00:00:00", []) == [Slice(None, "2024-12-31 00:00:00")]


def test_probe_pages_spread_over_the_list():
    assert probe_pages(100, 4) == [26, 51, 76]
    assert probe_pages(3, 2) == [2]


def test_next_second_rolls_over():
    assert next_second("2024-12-31 23:59:59") == "2025-01-01 00:00:00"


def test_slice_state_round_trips():
    piece = Slice("2024-01-01 00:00:00", "2024-02-01 00:00:00", True)
    assert Slice.from_json(piece.as_json()) == piece
