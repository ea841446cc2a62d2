; Inno Setup 6 script: Windows installer of the ConvNeXt Brain MRI Viewer (the PyInstaller one-folder app).
;
; Build the app first (python -m PyInstaller --noconfirm --distpath dist --workpath build\pyinstaller
; packaging\convnest_viewer.spec), then, from the repository root:
;
;   iscc /DAppVersion=0.1.0 packaging\windows\convnest-viewer.iss
;
; -> dist\convnest-viewer-<version>-windows-x64-setup.exe. /DSourceDir=... and /DOutputDir=... override the
; folders (relative paths are relative to this script). Installs per user by default (no admin needed);
; the installer offers an all-users install when run as administrator.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\convnest-viewer"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#define AppName "ConvNeXt Brain MRI Viewer"
#define AppExe "convnest-viewer.exe"

[Setup]
AppId={{6C0E9F4B-3C1D-4E7A-9B59-8E2B1C6A4D17}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=ConvNeXt Brain MRI Viewer developers
AppComments=Research use only, not for diagnosis.
DefaultDirName={autopf}\ConvNeXt Brain MRI Viewer
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=convnest-viewer-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\convnest.ico
UninstallDisplayIcon={app}\{#AppExe}
Compression=lzma2/max
SolidCompression=yes
LZMAUseSeparateProcess=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
; the whole one-folder app: convnest-viewer.exe (windowed), convnest-viewer-console.exe (prints --self-test
; output to the terminal) and _internal\ (Python, Qt, PyTorch, the resources: models, demo study, icons)
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
